<?php
// PHP SoapClient in WSDL mode against the refunds gateway: the 15-step lifecycle of
// tests/interop/README.md, every response field asserted by value AND by the PHP type ext/soap
// maps it to from the WSDL (xs:int/xs:long -> int, xs:decimal -> string, xs:boolean -> bool).
// Money is compared as the exact strings PHP returns for xs:decimal, never as floats.
//
// Env: WSDL_URL, SOAP_VERSION (1.1|1.2), GATEWAY_LOGIN, GATEWAY_PASSWORD, WORK_DIR.
// Prints `PASS <name>` / `FAIL <name>: <why>` per check; exits 1 if any check failed.

declare(strict_types=1);
error_reporting(E_ALL);
ini_set('soap.wsdl_cache_enabled', '0');

const DATE_RE = '/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/';
const SHOP_TZ = 'Europe/Warsaw';

function env(string $name, ?string $default = null): string
{
    $v = getenv($name);
    if ($v === false || $v === '') {
        if ($default !== null) {
            return $default;
        }
        fwrite(STDERR, "php-wsdl: environment variable $name is not set\n");
        exit(2);
    }
    return $v;
}

$wsdlUrl = env('WSDL_URL');
$version = env('SOAP_VERSION', '1.1');
$login = env('GATEWAY_LOGIN');
$password = env('GATEWAY_PASSWORD');
$workDir = env('WORK_DIR', sys_get_temp_dir() . '/php-wsdl');
@mkdir($workDir, 0777, true);

$soapVersion = match ($version) {
    '1.1' => SOAP_1_1,
    '1.2' => SOAP_1_2,
    default => (function () use ($version) {
        fwrite(STDERR, "php-wsdl: unsupported SOAP_VERSION '$version'\n");
        exit(2);
    })(),
};
$tag = 'soap' . str_replace('.', '', $version);

// authenticateKey = sha1(YYYYMMDD + sha1(password)), today's date in the shop's time zone.
$today = (new DateTimeImmutable('now', new DateTimeZone(SHOP_TZ)))->format('Ymd');
$auth = ['userLogin' => $login, 'authenticateKey' => sha1($today . sha1($password))];
$badAuth = ['userLogin' => $login, 'authenticateKey' => sha1($today . sha1($password . '-wrong'))];

/** Marks a property the response did not carry. */
final class Absent
{
}

function show(mixed $v): string
{
    if ($v instanceof Absent) {
        return '<absent>';
    }
    if (is_object($v) || is_array($v)) {
        return json_encode($v, JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION) ?: var_export($v, true);
    }
    return str_replace("\n", ' ', var_export($v, true));
}

/** $obj->a->b... by a dotted path; Absent if any step is missing. */
function field(mixed $obj, string $path): mixed
{
    foreach (explode('.', $path) as $name) {
        if (!is_object($obj) || !property_exists($obj, $name)) {
            return new Absent();
        }
        $obj = $obj->{$name};
    }
    return $obj;
}

final class Check
{
    /** @var string[] */
    public array $problems = [];

    public function eq(string $what, mixed $actual, mixed $expected): void
    {
        if ($actual instanceof Absent || $actual !== $expected) {
            $this->problems[] = "$what: expected " . show($expected) . ', got ' . show($actual);
        }
    }

    public function that(string $what, bool $ok, mixed $actual): void
    {
        if (!$ok) {
            $this->problems[] = "$what: got " . show($actual);
        }
    }

    public function absent(string $what, mixed $actual): void
    {
        if (!($actual instanceof Absent) && $actual !== null) {
            $this->problems[] = "$what: expected absent, got " . show($actual);
        }
    }

    /** Exactly these properties (by name) on a response object, nothing more or less. */
    public function keys(string $what, mixed $obj, array $expected): void
    {
        if (!is_object($obj)) {
            $this->problems[] = "$what: expected an object, got " . show($obj);
            return;
        }
        $got = array_keys(get_object_vars($obj));
        $a = $got;
        $b = $expected;
        sort($a);
        sort($b);
        if ($a !== $b) {
            $this->problems[] = "$what: expected properties " . implode(',', $expected) . ', got ' . implode(',', $got);
        }
    }

    /** errors{faultCode 0, faultString ""}. */
    public function success(mixed $resp): void
    {
        $this->eq('errors.faultCode', field($resp, 'errors.faultCode'), 0);
        $this->eq('errors.faultString', field($resp, 'errors.faultString'), '');
    }

    /** errors{faultCode N, faultString non-empty}; no result/results. */
    public function fault(mixed $resp, int $code): void
    {
        $this->eq('errors.faultCode', field($resp, 'errors.faultCode'), $code);
        $fs = field($resp, 'errors.faultString');
        $this->that('errors.faultString (non-empty string)', is_string($fs) && $fs !== '', $fs);
        $this->absent('result', field($resp, 'result'));
        $this->absent('results', field($resp, 'results'));
    }
}

/** A maxOccurs="unbounded" element as PHP gives it (absent, one object, or an array) as a list. */
function many(mixed $v): array
{
    if ($v instanceof Absent || $v === null) {
        return [];
    }
    return is_array($v) ? array_values($v) : [$v];
}

/** A shop-local `YYYY-MM-DD HH:MM:SS` within $slack seconds of now. */
function recentShopDate(string $s, int $slack = 900): bool
{
    $d = DateTimeImmutable::createFromFormat('!Y-m-d H:i:s', $s, new DateTimeZone(SHOP_TZ));
    return $d !== false && abs($d->getTimestamp() - time()) <= $slack;
}

$failures = 0;
$client = null;

function step(string $name, callable $body): void
{
    global $failures, $client, $workDir, $tag;
    $check = new Check();
    try {
        if ($client === null) {
            throw new RuntimeException('no SoapClient (the WSDL did not load)');
        }
        $body($check, $client);
    } catch (SoapFault $f) {
        $check->problems[] = "SoapFault [{$f->faultcode}] {$f->getMessage()}";
    } catch (Throwable $t) {
        $check->problems[] = get_class($t) . ': ' . $t->getMessage();
    }
    $req = $client?->__getLastRequest() ?? '';
    $res = $client?->__getLastResponse() ?? '';
    $file = sprintf('%s/php-wsdl-%s-%s', $workDir, $tag, preg_replace('/[^A-Za-z0-9_.-]/', '_', $name));
    @file_put_contents("$file.request.xml", (string) $req);
    @file_put_contents("$file.response.xml", ($client?->__getLastResponseHeaders() ?? '') . "\n" . $res);
    if ($check->problems) {
        $failures++;
        echo "FAIL $name: " . implode('; ', $check->problems) . "\n";
        fwrite(STDERR, "---- $name request ----\n$req\n---- $name response ----\n"
            . ($client?->__getLastResponseHeaders() ?? '') . "\n$res\n");
    } else {
        echo "PASS $name\n";
    }
}

// Load the WSDL (its soap:address is the endpoint).
try {
    $client = new SoapClient($wsdlUrl, [
        'soap_version' => $soapVersion,
        'cache_wsdl' => WSDL_CACHE_NONE,
        'trace' => 1,
        'exceptions' => true,
        'connection_timeout' => 15,
    ]);
    $ops = [];
    foreach ($client->__getFunctions() as $sig) {
        if (preg_match('/^\S+\s+(\w+)\(/', $sig, $m)) {
            $ops[$m[1]] = true;
        }
    }
    $want = ['addAutomaticRefund', 'addAutomaticRefundForOrder', 'addManualRefund', 'getPossibleAutoRefunds',
        'getRefundStatus', 'updateRefund', 'confirmRefund', 'cancelRefund', 'retrieveRefundsList'];
    $missing = array_diff($want, array_keys($ops));
    if ($missing) {
        $failures++;
        echo 'FAIL wsdl-load: operations missing from the WSDL: ' . implode(',', $missing) . "\n";
    } else {
        echo "PASS wsdl-load\n";
    }
} catch (Throwable $t) {
    $failures++;
    echo 'FAIL wsdl-load: ' . get_class($t) . ': ' . str_replace("\n", ' ', $t->getMessage()) . "\n";
}

// 1
step('01-getPossibleAutoRefunds', function (Check $c, SoapClient $s) use ($auth) {
    $r = $s->getPossibleAutoRefunds(['authenticate' => $auth,
        'params' => ['sourceType' => 'order', 'sourceId' => 2001]]);
    $c->success($r);
    $c->absent('result', field($r, 'result'));
    $list = many(field($r, 'results'));
    $c->eq('count(results)', count($list), 1);
    if ($list) {
        $e = $list[0];
        $c->keys('results[0]', $e, ['paymentId', 'value', 'refundType', 'refundCurrency']);
        $c->eq('results[0].paymentId', field($e, 'paymentId'), '11');
        $c->eq('results[0].value', field($e, 'value'), '200.00');
        $c->eq('results[0].refundType', field($e, 'refundType'), 'full');
        $c->eq('results[0].refundCurrency', field($e, 'refundCurrency'), 'PLN');
    }
});

// 2
step('02-addAutomaticRefundForOrder', function (Check $c, SoapClient $s) use ($auth) {
    $r = $s->addAutomaticRefundForOrder(['authenticate' => $auth,
        'params' => ['sourceId' => 2001, 'paymentId' => '11', 'refundValue' => '40.00', 'refundCurrency' => 'PLN']]);
    $c->success($r);
    $c->keys('result', field($r, 'result'), ['refundId']);
    $c->eq('result.refundId', field($r, 'result.refundId'), 20);
});

// 3
step('03-addManualRefund', function (Check $c, SoapClient $s) use ($auth) {
    $r = $s->addManualRefund(['authenticate' => $auth,
        'params' => ['sourceType' => 'return', 'sourceId' => 601, 'refundValue' => '10.00', 'refundCurrency' => 'PLN',
            'refundDetails' => ['paymentFormId' => 2, 'account' => 'PL61109010140000071219812874']]]);
    $c->success($r);
    $c->keys('result', field($r, 'result'), ['refundId']);
    $c->eq('result.refundId', field($r, 'result.refundId'), 21);
});

// 4
step('04-addAutomaticRefund', function (Check $c, SoapClient $s) use ($auth) {
    $r = $s->addAutomaticRefund(['authenticate' => $auth,
        'params' => ['sourceType' => 'return', 'sourceId' => 603]]);
    $c->success($r);
    $c->keys('result', field($r, 'result'), ['refundId']);
    $c->eq('result.refundId', field($r, 'result.refundId'), 22);
});

// 5
step('05-updateRefund', function (Check $c, SoapClient $s) use ($auth) {
    $r = $s->updateRefund(['authenticate' => $auth,
        'params' => ['sourceType' => 'order', 'sourceId' => 2001, 'paymentId' => '20',
            'refundValue' => '45.50', 'refundCurrency' => 'PLN']]);
    $c->success($r);
    $c->keys('result', field($r, 'result'), ['updateResult']);
    $c->eq('result.updateResult', field($r, 'result.updateResult'), true);
});

$statusKeys = ['refundDateAdd', 'refundValue', 'refundStatus', 'refundDateConfirm', 'refundExternalId', 'refundCurrency'];
$dateAdd = null;

// 6
step('06-getRefundStatus-new', function (Check $c, SoapClient $s) use ($auth, $statusKeys, &$dateAdd) {
    $r = $s->getRefundStatus(['authenticate' => $auth,
        'params' => ['sourceType' => 'order', 'sourceId' => 2001, 'paymentId' => '20']]);
    $c->success($r);
    $c->keys('result', field($r, 'result'), $statusKeys);
    $c->eq('result.refundStatus', field($r, 'result.refundStatus'), 'New');
    $c->eq('result.refundValue', field($r, 'result.refundValue'), '45.50');
    $c->eq('result.refundCurrency', field($r, 'result.refundCurrency'), 'PLN');
    $d = field($r, 'result.refundDateAdd');
    $c->that('result.refundDateAdd (YYYY-MM-DD HH:MM:SS)', is_string($d) && preg_match(DATE_RE, $d) === 1, $d);
    $c->that('result.refundDateAdd (now, shop time zone)', is_string($d) && recentShopDate($d), $d);
    $dateAdd = is_string($d) ? $d : null;
    $c->eq('result.refundDateConfirm', field($r, 'result.refundDateConfirm'), '');
    $c->eq('result.refundExternalId', field($r, 'result.refundExternalId'), '');
});

// 7
step('07-confirmRefund', function (Check $c, SoapClient $s) use ($auth) {
    $r = $s->confirmRefund(['authenticate' => $auth,
        'params' => ['sourceType' => 'order', 'sourceId' => 2001, 'paymentId' => '20']]);
    $c->success($r);
    $c->keys('result', field($r, 'result'), ['confirmResult']);
    $c->eq('result.confirmResult', field($r, 'result.confirmResult'), true);
});

// 8
step('08-getRefundStatus-processing', function (Check $c, SoapClient $s) use ($auth, $statusKeys, &$dateAdd) {
    $r = $s->getRefundStatus(['authenticate' => $auth,
        'params' => ['sourceType' => 'order', 'sourceId' => 2001, 'paymentId' => '20']]);
    $c->success($r);
    $c->keys('result', field($r, 'result'), $statusKeys);
    $c->eq('result.refundStatus', field($r, 'result.refundStatus'), 'Processing');
    $c->eq('result.refundValue', field($r, 'result.refundValue'), '45.50');
    $c->eq('result.refundCurrency', field($r, 'result.refundCurrency'), 'PLN');
    $c->eq('result.refundDateAdd (unchanged)', field($r, 'result.refundDateAdd'), $dateAdd);
    $d = field($r, 'result.refundDateConfirm');
    $c->that('result.refundDateConfirm (non-empty YYYY-MM-DD HH:MM:SS)', is_string($d) && preg_match(DATE_RE, $d) === 1, $d);
    $c->that('result.refundDateConfirm (>= refundDateAdd)', is_string($d) && $dateAdd !== null && $d >= $dateAdd, $d);
    $c->eq('result.refundExternalId', field($r, 'result.refundExternalId'), '');
});

// 9
step('09-cancelRefund', function (Check $c, SoapClient $s) use ($auth) {
    $r = $s->cancelRefund(['authenticate' => $auth,
        'params' => ['sourceType' => 'return', 'sourceId' => 601, 'paymentId' => '21']]);
    $c->success($r);
    $c->keys('result', field($r, 'result'), ['resultStatus']);
    $c->eq('result.resultStatus', field($r, 'result.resultStatus'), true);
});

$listKeys = ['sourceType', 'sourceId', 'paymentId', 'refundValue', 'refundCurrency'];

// 10, 11
foreach ([[0, '22', '30.00'], [1, '23', '40.00']] as $n => [$page, $paymentId, $value]) {
    step(sprintf('%02d-retrieveRefundsList-page%d', 10 + $n, $page),
        function (Check $c, SoapClient $s) use ($auth, $listKeys, $page, $paymentId, $value) {
            $r = $s->retrieveRefundsList(['authenticate' => $auth,
                'params' => ['sourceType' => 'all', 'resultsPage' => $page, 'resultsLimit' => 1]]);
            $c->success($r);
            $list = many(field($r, 'results'));
            $c->eq('count(results)', count($list), 1);
            if ($list) {
                $e = $list[0];
                $c->keys('results[0]', $e, $listKeys);
                $c->eq('results[0].sourceType', field($e, 'sourceType'), 'return');
                $c->eq('results[0].sourceId', field($e, 'sourceId'), 603);
                $c->eq('results[0].paymentId', field($e, 'paymentId'), $paymentId);
                $c->eq('results[0].refundValue', field($e, 'refundValue'), $value);
                $c->eq('results[0].refundCurrency', field($e, 'refundCurrency'), 'PLN');
            }
            $c->eq('resultsNumberAll', field($r, 'resultsNumberAll'), 2);
            $c->eq('resultsNumberPage', field($r, 'resultsNumberPage'), 2);
            $c->eq('resultsPage', field($r, 'resultsPage'), $page);
            $c->eq('resultsLimit', field($r, 'resultsLimit'), 1);
        });
}

// 12
step('12-addAutomaticRefundForOrder-4003', function (Check $c, SoapClient $s) use ($auth) {
    $r = $s->addAutomaticRefundForOrder(['authenticate' => $auth,
        'params' => ['sourceId' => 2001, 'paymentId' => '11', 'refundValue' => '1000.00', 'refundCurrency' => 'PLN']]);
    $c->fault($r, 4003);
});

// 13
step('13-addManualRefund-4004', function (Check $c, SoapClient $s) use ($auth) {
    $r = $s->addManualRefund(['authenticate' => $auth,
        'params' => ['sourceType' => 'order', 'sourceId' => 2001, 'refundValue' => '5.00', 'refundCurrency' => 'EUR',
            'refundDetails' => ['paymentFormId' => 1]]]);
    $c->fault($r, 4004);
});

// 14
step('14-cancelRefund-4019', function (Check $c, SoapClient $s) use ($auth) {
    $r = $s->cancelRefund(['authenticate' => $auth,
        'params' => ['sourceType' => 'order', 'sourceId' => 2001, 'paymentId' => '20']]);
    $c->fault($r, 4019);
});

// 15
step('15-getRefundStatus-bad-key', function (Check $c, SoapClient $s) use ($badAuth) {
    $r = $s->getRefundStatus(['authenticate' => $badAuth,
        'params' => ['sourceType' => 'order', 'sourceId' => 2001, 'paymentId' => '20']]);
    $c->fault($r, 1);
});

exit($failures > 0 ? 1 : 0);
