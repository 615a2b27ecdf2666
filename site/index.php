<?php
// The default site: a visit counter and a small guestbook kept in MariaDB.
//
// It is deployed by git push: this folder is built into the webserver image
// (images/webserver/Dockerfile), so the code that runs is always the commit's.
// What the site writes at run time goes to the database or to UPLOADS_DIR (the
// `uploads` volume, outside the docroot, never executed); both are backed up,
// the code is not: a restore brings data back, never old code.
//
// Replace it with your own site; read DB_* and UPLOADS_DIR as setting() does
// (desired-state/compose.yaml sets them).

declare(strict_types=1);

const NAME_MAX = 60;
const MESSAGE_MAX = 500;
const ENTRIES_SHOWN = 20;

function h(string $text): string
{
    return htmlspecialchars($text, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

/**
 * A setting from the container's environment. OpenLiteSpeed does not pass that
 * environment on to PHP, so the image's start wrapper also writes each one to
 * /run/site-env/NAME (SITE_ENV names them); Apache's mod_php sees it directly.
 */
function setting(string $name, string $default = ''): string
{
    $value = getenv($name);
    if ($value === false) {
        $file = '/run/site-env/' . $name;
        $value = is_readable($file) ? file_get_contents($file) : false;
    }
    return $value === false || $value === '' ? $default : $value;
}

function connect(): PDO
{
    $dsn = sprintf(
        'mysql:host=%s;dbname=%s;charset=utf8mb4',
        setting('DB_HOST', 'db'),
        setting('DB_NAME', 'site')
    );
    $db = new PDO($dsn, setting('DB_USER', 'site'), setting('DB_PASSWORD'), [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_DEFAULT_FETCH_MODE => PDO::FETCH_ASSOC,
        PDO::ATTR_EMULATE_PREPARES => false,
        PDO::ATTR_TIMEOUT => 3,
    ]);
    // Created on first use, so a fresh database (or one restored from before
    // this site existed) works without a migration step.
    $db->exec('CREATE TABLE IF NOT EXISTS visits (
        id TINYINT UNSIGNED PRIMARY KEY, count BIGINT UNSIGNED NOT NULL
    ) ENGINE=InnoDB');
    $db->exec('CREATE TABLE IF NOT EXISTS guestbook (
        id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
        name VARCHAR(' . NAME_MAX . ') NOT NULL,
        message VARCHAR(' . MESSAGE_MAX . ') NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4');
    return $db;
}

/** The text of a form field, trimmed, or null when missing, empty or too long. */
function field(string $key, int $max): ?string
{
    $value = $_POST[$key] ?? null;
    if (!is_string($value)) {
        return null;
    }
    $value = trim($value);
    // Valid UTF-8 of 1 to $max characters (PCRE's /u refuses invalid bytes;
    // no mbstring needed, which not every PHP build has).
    return preg_match('/^.{1,' . $max . '}$/su', $value) === 1 ? $value : null;
}

$method = $_SERVER['REQUEST_METHOD'] ?? 'GET';
if ($method !== 'GET' && $method !== 'HEAD' && $method !== 'POST') {
    http_response_code(405);
    header('Allow: GET, HEAD, POST');
    exit;
}

$error = null;
try {
    $db = connect();
    if ($method === 'POST') {
        // Writes come only by POST; the answer is a redirect (POST-redirect-GET),
        // so reloading the page never posts the entry again.
        $name = field('name', NAME_MAX);
        $message = field('message', MESSAGE_MAX);
        if ($name === null || $message === null) {
            http_response_code(422);
            $error = sprintf(
                'Please give a name (up to %d characters) and a message (up to %d).',
                NAME_MAX,
                MESSAGE_MAX
            );
        } else {
            $db->prepare('INSERT INTO guestbook (name, message) VALUES (?, ?)')
                ->execute([$name, $message]);
            header('Location: ./', true, 303);
            exit;
        }
    }
    if ($method === 'GET') {
        $db->prepare('INSERT INTO visits (id, count) VALUES (1, 1)
            ON DUPLICATE KEY UPDATE count = count + 1')->execute();
    }
    $visits = (int) $db->query('SELECT count FROM visits WHERE id = 1')->fetchColumn();
    $listing = $db->prepare('SELECT name, message, created_at FROM guestbook
        ORDER BY id DESC LIMIT ' . ENTRIES_SHOWN);
    $listing->execute();
    $entries = $listing->fetchAll();
} catch (PDOException $e) {
    // The reason goes to the server's log; the visitor sees no detail (no host,
    // user or password) and no stack trace.
    error_log('site: database: ' . $e->getMessage());
    http_response_code(503);
    header('Retry-After: 30');
    $db = null;
}

$uploads = setting('UPLOADS_DIR');
$uploadsWritable = $uploads !== '' && is_dir($uploads) && is_writable($uploads);
?>
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Welcome</title>
<link rel="stylesheet" href="style.css">
</head>
<body>
<main>
<h1>Welcome</h1>
<p class="lead">This site is deployed by <code>git push</code>.</p>
<?php if ($db === null): ?>
<p class="problem" role="alert">The database is unreachable just now. Please try again in a minute.</p>
<?php else: ?>
<p class="visits">Visits so far: <strong id="visits"><?= $visits ?></strong></p>

<h2>Guestbook</h2>
<?php if ($error !== null): ?>
<p class="problem" role="alert"><?= h($error) ?></p>
<?php endif; ?>
<form method="post" action="./">
<label>Name <input name="name" maxlength="<?= NAME_MAX ?>" required></label>
<label>Message <textarea name="message" maxlength="<?= MESSAGE_MAX ?>" rows="3" required></textarea></label>
<button type="submit">Sign the guestbook</button>
</form>
<?php if ($entries === []): ?>
<p>No entries yet.</p>
<?php else: ?>
<ul class="entries">
<?php foreach ($entries as $entry): ?>
<li><p class="message"><?= h($entry['message']) ?></p>
<p class="by">&mdash; <?= h($entry['name']) ?>, <time><?= h($entry['created_at']) ?></time></p></li>
<?php endforeach; ?>
</ul>
<?php endif; ?>
<?php endif; ?>
</main>
<footer>
PHP <?= h(PHP_VERSION) ?>; uploads folder <?= $uploadsWritable ? 'writable' : 'not writable' ?>.
</footer>
</body>
</html>
