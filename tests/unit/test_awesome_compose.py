"""Docker's awesome-compose samples, as a new user would bring them: each validates,
or fails only on keys the reconciler documents as unsupported, and says which.

The compose files are read from the corpus beside the repository
(tests/fixtures/awesome_compose.py), laid out in a folder as a commit would
hold them, with every variable given. ``STILL_REFUSED`` is the whole
expectation: a sample not in it must validate.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.errors import InvalidDesiredState
from reconciler.model.loading import load_desired_state
from tests.fixtures import awesome_compose as corpus


def test_the_corpus_is_there() -> None:
    # Absent, the table below would have no cases and pass without testing a thing.
    assert len(corpus.samples()) == 37, (
        f"the awesome-compose corpus is not at {corpus.CORPUS} (set RECONCILER_CORPUS_DIR)"
    )


DOCS = Path(__file__).resolve().parents[2] / "docs" / "compose-subset.md"


class Refusal(NamedTuple):
    why: str  # for the reader of this table
    says: str  # what the error line must say
    documented: str  # what docs/compose-subset.md names as unsupported, in backticks


# What the reconciler refuses in these samples, by sample and key path (as the
# error line names it). Everything else in the corpus is supported. This is
# the table for issue 13 done: secrets, configs, expose, container_name,
# stop_signal, cap_add, deploy.resources, sysctls, network_mode and stdin_open
# are then supported, so no sample is refused for them.
STILL_REFUSED: dict[str, dict[str, Refusal]] = {
    "minecraft": {
        "services.minecraft.volumes[0]": Refusal(
            why="'~/minecraft_data' names the home folder of whoever runs Compose; the "
            "reconciler runs as a service, whose home is no one's: write an absolute path",
            says="'~' has no meaning for the reconciler",
            documented="~",
        ),
    },
    "pihole-cloudflared-DoH": {
        "services.cloudflared.networks.dns-net.ipv4_address": Refusal(
            why="a fixed address needs a network with a subnet the reconciler manages "
            "(ipam); services reach each other by name",
            says="unsupported key: fixed addresses need a subnet the reconciler does not "
            "manage (ipam); reach the service by its name",
            documented="ipv4_address",
        ),
        "networks.dns-net.ipam": Refusal(
            why="the reconciler leaves subnets to Docker",
            says="unsupported key: the reconciler leaves subnets to Docker",
            documented="ipam",
        ),
    },
}


def _refusals(sample: str, root: Path) -> dict[str, str]:
    """``{key path: error line}`` of the sample's refusal; empty when it validates."""
    text = corpus.compose_text(sample)
    corpus.write(root, corpus.layout(text))
    named = re.search(r"^name:", text, flags=re.MULTILINE) is not None
    try:
        load_desired_state(
            root,
            project=None if named else corpus.project_of(sample),
            environ=corpus.variables(text),
        )
    except InvalidDesiredState as exc:
        return {issue.key: str(issue) for issue in exc.issues}
    return {}


@pytest.mark.parametrize("sample", corpus.samples())
def test_each_sample_validates_or_is_refused_only_for_a_documented_reason(
    sample: str, tmp_path: Path
) -> None:
    refused = _refusals(sample, tmp_path)
    expected = STILL_REFUSED.get(sample, {})

    # Shown with -s or -rP: which samples pass, and what each refusal says.
    print(f"{sample}: " + ("; ".join(refused.values()) if refused else "valid"))
    unexpected = [line for key, line in refused.items() if key not in expected]
    assert not unexpected, f"{sample} is refused for what STILL_REFUSED does not list:\n" + (
        "\n".join(unexpected)
    )
    assert set(refused) == set(expected), (
        f"{sample} is no longer refused for {set(expected) - set(refused)}"
    )
    for key, refusal in expected.items():
        assert refusal.says in refused[key]


def test_every_refusal_is_documented_as_unsupported() -> None:
    docs = DOCS.read_text()
    for sample, refusals in STILL_REFUSED.items():
        assert sample in corpus.samples()
        for key, refusal in refusals.items():
            assert f"`{refusal.documented}`" in docs, (sample, key)


def test_the_layout_gives_what_the_sample_names_and_keeps_the_file_as_it_is() -> None:
    text = corpus.compose_text("react-express-mysql")
    files = corpus.layout(text)
    assert files[corpus.COMPOSE] == text
    assert files["desired-state/backend/Dockerfile"] == corpus.PLACEHOLDER_DOCKERFILE
    assert files["desired-state/backend/package.json"] == ""
    assert files["desired-state/backend/src/.keep"] == ""
    assert files["desired-state/db/password.txt"] == ""
    assert corpus.variables("a: ${A:-x} $B $$C ${D}") == {
        "A": "example",
        "B": "example",
        "D": "example",
    }
