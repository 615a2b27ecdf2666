<?php
// The official image's variables: PMA_HOST and PMA_PORT name the server.
// Included last by Debian's /etc/phpmyadmin/config.inc.php (conf.d/*.php).
$pma_host = getenv('PMA_HOST');
if ($pma_host !== false && $pma_host !== '') {
    $cfg['Servers'][1]['host'] = $pma_host;
    $cfg['Servers'][1]['port'] = getenv('PMA_PORT') ?: '3306';
    $cfg['Servers'][1]['auth_type'] = 'cookie';
    $cfg['Servers'][1]['AllowNoPassword'] = false;
}
