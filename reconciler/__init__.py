"""A GitOps reconciler for one Docker VM: deploy by git push, backups to S3, restores by commit."""

__version__ = "0.1.0"
