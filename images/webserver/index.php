<?php
// Placeholder of a fresh install: replace it by deploying your site into the
// `site` volume (or by restoring a backup of it).
header('Content-Type: text/plain; charset=utf-8');
echo "reconciler: the web server runs; the site volume is empty.\n";
echo 'PHP ' . PHP_VERSION . '; mysqli ' . (extension_loaded('mysqli') ? 'yes' : 'no')
    . '; pdo_mysql ' . (extension_loaded('pdo_mysql') ? 'yes' : 'no') . "\n";
