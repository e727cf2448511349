<?php
// PHP SoapClient in NON-WSDL mode (style rpc, use encoded: the legacy way of calling the IAI-Shop
// gate, with xsi:type on every element) against the refunds gateway: the 15-step lifecycle of
// tests/interop/README.md, plus one informational call in PHP's legacy "Map" encoding of a plain
// associative array (check `legacy-map-encoding`, printed as INFO when it fails; never fails the run).
//
// Requests are built with SoapVar/SoapParam so that each call reads
//   <ns1:{operation}>
//     <authenticate xsi:type="ns1:authenticate"><userLogin xsi:type="xsd:string">…</userLogin>…</authenticate>
//     <params xsi:type="ns1:{paramsType}">…</params>
//   </ns1:{operation}>
// Without a WSDL PHP types nothing in the response: every leaf comes back as a PHP string, every
// element with children as a stdClass; the response wrapper's children come back as an array keyed
// by name, or, when there is only one child (errors alone, on a business error), as that child
// itself. The assertions below compare exact strings (money included).
//
// Env: WSDL_URL (the endpoint is WSDL_URL without `?wsdl`), SOAP_VERSION (1.1), GATEWAY_LOGIN,
// GATEWAY_PASSWORD, WORK_DIR.

declare(strict_types=1);
error_reporting(E_ALL);

const NS = 'urn:refunds-gateway:refunds';
const DATE_RE = '/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/';
const SHOP_TZ = 'Europe/Warsaw';

function env(string $name, ?string $default = null): string
{
    $v = getenv($name);
    if ($v === false || $v === '') {
        if ($default !== null) {
            return $default;
        }
        fwrite(STDERR, "php-nonwsdl: environment variable $name is not set\n");
        exit(2);
    }
    return $v;
}

$wsdlUrl = env('WSDL_URL');
$version = env('SOAP_VERSION', '1.1');
$login = env('GATEWAY_LOGIN');
$password = env('GATEWAY_PASSWORD');
$workDir = env('WORK_DIR', sys_get_temp_dir() . '/php-nonwsdl');
@mkdir($workDir, 0777, true);

$soapVersion = match ($version) {
    '1.1' => SOAP_1_1,
    '1.2' => SOAP_1_2,
    default => (function () use ($version) {
        fwrite(STDERR, "php-nonwsdl: unsupported SOAP_VERSION '$version'\n");
        exit(2);
    })(),
};
$tag = 'soap' . str_replace('.', '', $version);

// The endpoint: the WSDL's address without its `?wsdl` query (or a legacy gate's `/wsdl` suffix).
$endpoint = preg_replace('/\?wsdl$/i', '', $wsdlUrl);
if ($endpoint === $wsdlUrl) {
    $endpoint = preg_replace('#/wsdl$#i', '', $wsdlUrl);
}

// authenticateKey = sha1(YYYYMMDD + sha1(password)), today's date in the shop's time zone.
$today = (new DateTimeImmutable('now', new DateTimeZone(SHOP_TZ)))->format('Ymd');
$key = sha1($today . sha1($password));
$badKey = sha1($today . sha1($password . '-wrong'));

// ---------------------------------------------------------------- request building (SoapVar)

function str(string $v): SoapVar
{
    return new SoapVar($v, XSD_STRING);
}

function long(int $v): SoapVar
{
    return new SoapVar($v, XSD_LONG);
}

function int32(int $v): SoapVar
{
    return new SoapVar($v, XSD_INT);
}

function dec(string $v): SoapVar
{
    return new SoapVar($v, XSD_DECIMAL);
}

/** A struct with xsi:type="ns1:{type}". */
function struct(string $type, array $fields): SoapVar
{
    return new SoapVar((object) $fields, SOAP_ENC_OBJECT, $type, NS);
}

/** The two parts of every call: authenticate and params. */
function args(string $login, string $key, string $paramsType, array $params): array
{
    return [
        new SoapParam(struct('authenticate', ['userLogin' => str($login), 'authenticateKey' => str($key)]), 'authenticate'),
        new SoapParam(struct($paramsType, $params), 'params'),
    ];
}

// ---------------------------------------------------------------- assertions

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

function field(mixed $obj, string $path): mixed
{
    foreach (explode('.', $path) as $name) {
        if (is_array($obj) && array_key_exists($name, $obj)) {
            $obj = $obj[$name];
        } elseif (is_object($obj) && property_exists($obj, $name)) {
            $obj = $obj->{$name};
        } else {
            return new Absent();
        }
    }
    return $obj;
}

/**
 * What PHP's non-WSDL decoding returns for `<{op}Response>`: an array keyed by child name when
 * the wrapper has several children, the child itself when it has one. As an object with the
 * children as properties either way (a lone child is taken to be `errors`, the only element the
 * gateway always sends).
 */
function response(mixed $ret): stdClass
{
    if (is_array($ret)) {
        return (object) $ret;
    }
    if (is_object($ret) && property_exists($ret, 'faultCode')) {
        return (object) ['errors' => $ret];
    }
    throw new UnexpectedValueException('response is neither a list of parts nor errors: ' . show($ret));
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
        if (!($actual instanceof Absent)) {
            $this->problems[] = "$what: expected absent, got " . show($actual);
        }
    }

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
            $this->problems[] = "$what: expected elements " . implode(',', $expected) . ', got ' . implode(',', $got);
        }
    }

    public function success(stdClass $r): void
    {
        $this->eq('errors.faultCode', field($r, 'errors.faultCode'), '0');
        $this->eq('errors.faultString', field($r, 'errors.faultString'), '');
    }

    public function fault(stdClass $r, int $code): void
    {
        $this->eq('errors.faultCode', field($r, 'errors.faultCode'), (string) $code);
        $fs = field($r, 'errors.faultString');
        $this->that('errors.faultString (non-empty string)', is_string($fs) && $fs !== '', $fs);
        $this->absent('result', field($r, 'result'));
        $this->absent('results', field($r, 'results'));
        $this->keys('response', $r, ['errors']);
    }
}

function many(mixed $v): array
{
    if ($v instanceof Absent || $v === null) {
        return [];
    }
    return is_array($v) ? array_values($v) : [$v];
}

function recentShopDate(string $s, int $slack = 900): bool
{
    $d = DateTimeImmutable::createFromFormat('!Y-m-d H:i:s', $s, new DateTimeZone(SHOP_TZ));
    return $d !== false && abs($d->getTimestamp() - time()) <= $slack;
}

// ---------------------------------------------------------------- the client and the steps

$client = new SoapClient(null, [
    'location' => $endpoint,
    'uri' => NS,
    'style' => SOAP_RPC,
    'use' => SOAP_ENCODED,
    'soap_version' => $soapVersion,
    'trace' => 1,
    'exceptions' => true,
    'connection_timeout' => 15,
]);

$failures = 0;

function save(string $name): array
{
    global $client, $workDir, $tag;
    $req = (string) $client->__getLastRequest();
    $res = (string) $client->__getLastResponseHeaders() . "\n" . (string) $client->__getLastResponse();
    $file = sprintf('%s/php-nonwsdl-%s-%s', $workDir, $tag, preg_replace('/[^A-Za-z0-9_.-]/', '_', $name));
    @file_put_contents("$file.request.xml", $req);
    @file_put_contents("$file.response.xml", $res);
    return [$req, $res];
}

/** Runs one call; $body gets a Check and calls __soapCall itself. */
function step(string $name, callable $body, bool $informational = false): void
{
    global $failures, $client;
    $check = new Check();
    try {
        $body($check, $client);
    } catch (SoapFault $f) {
        $check->problems[] = "SoapFault [{$f->faultcode}] {$f->getMessage()}";
    } catch (Throwable $t) {
        $check->problems[] = get_class($t) . ': ' . $t->getMessage();
    }
    [$req, $res] = save($name);
    if ($check->problems) {
        if ($informational) {
            echo "INFO $name: " . implode('; ', $check->problems) . "\n";
        } else {
            $failures++;
            echo "FAIL $name: " . implode('; ', $check->problems) . "\n";
        }
        fwrite(STDERR, "---- $name request ----\n$req\n---- $name response ----\n$res\n");
    } else {
        echo "PASS $name\n";
    }
}

/** Calls $op with authenticate + params (typed $paramsType) and returns the decoded response. */
function call(SoapClient $s, string $op, string $paramsType, array $params, ?string $key = null): stdClass
{
    global $login, $key0;
    return response($s->__soapCall($op, args($login, $key ?? $key0, $paramsType, $params)));
}

$key0 = $key;

// 1
step('01-getPossibleAutoRefunds', function (Check $c, SoapClient $s) {
    $r = call($s, 'getPossibleAutoRefunds', 'sourceParams', ['sourceType' => str('order'), 'sourceId' => long(2001)]);
    $c->success($r);
    $c->keys('response', $r, ['errors', 'results']);
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
step('02-addAutomaticRefundForOrder', function (Check $c, SoapClient $s) {
    $r = call($s, 'addAutomaticRefundForOrder', 'addAutomaticRefundForOrderParams', ['sourceId' => long(2001),
        'paymentId' => str('11'), 'refundValue' => dec('40.00'), 'refundCurrency' => str('PLN')]);
    $c->success($r);
    $c->keys('response', $r, ['errors', 'result']);
    $c->keys('result', field($r, 'result'), ['refundId']);
    $c->eq('result.refundId', field($r, 'result.refundId'), '20');
});

// 3
step('03-addManualRefund', function (Check $c, SoapClient $s) {
    $r = call($s, 'addManualRefund', 'addManualRefundParams', ['sourceType' => str('return'), 'sourceId' => long(601),
        'refundValue' => dec('10.00'), 'refundCurrency' => str('PLN'),
        'refundDetails' => struct('refundDetails', ['paymentFormId' => long(2),
            'account' => str('PL61109010140000071219812874')])]);
    $c->success($r);
    $c->keys('response', $r, ['errors', 'result']);
    $c->keys('result', field($r, 'result'), ['refundId']);
    $c->eq('result.refundId', field($r, 'result.refundId'), '21');
});

// 4
step('04-addAutomaticRefund', function (Check $c, SoapClient $s) {
    $r = call($s, 'addAutomaticRefund', 'addAutomaticRefundParams', ['sourceType' => str('return'), 'sourceId' => long(603)]);
    $c->success($r);
    $c->keys('response', $r, ['errors', 'result']);
    $c->keys('result', field($r, 'result'), ['refundId']);
    $c->eq('result.refundId', field($r, 'result.refundId'), '22');
});

// 5
step('05-updateRefund', function (Check $c, SoapClient $s) {
    $r = call($s, 'updateRefund', 'updateRefundParams', ['sourceType' => str('order'), 'sourceId' => long(2001),
        'paymentId' => str('20'), 'refundValue' => dec('45.50'), 'refundCurrency' => str('PLN')]);
    $c->success($r);
    $c->keys('response', $r, ['errors', 'result']);
    $c->keys('result', field($r, 'result'), ['updateResult']);
    $c->eq('result.updateResult', field($r, 'result.updateResult'), 'true');
});

$statusKeys = ['refundDateAdd', 'refundValue', 'refundStatus', 'refundDateConfirm', 'refundExternalId', 'refundCurrency'];
$refund20 = ['sourceType' => str('order'), 'sourceId' => long(2001), 'paymentId' => str('20')];
$dateAdd = null;

// 6
step('06-getRefundStatus-new', function (Check $c, SoapClient $s) use ($statusKeys, $refund20, &$dateAdd) {
    $r = call($s, 'getRefundStatus', 'refundParams', $refund20);
    $c->success($r);
    $c->keys('response', $r, ['errors', 'result']);
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
step('07-confirmRefund', function (Check $c, SoapClient $s) use ($refund20) {
    $r = call($s, 'confirmRefund', 'refundParams', $refund20);
    $c->success($r);
    $c->keys('response', $r, ['errors', 'result']);
    $c->keys('result', field($r, 'result'), ['confirmResult']);
    $c->eq('result.confirmResult', field($r, 'result.confirmResult'), 'true');
});

// 8
step('08-getRefundStatus-processing', function (Check $c, SoapClient $s) use ($statusKeys, $refund20, &$dateAdd) {
    $r = call($s, 'getRefundStatus', 'refundParams', $refund20);
    $c->success($r);
    $c->keys('response', $r, ['errors', 'result']);
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
step('09-cancelRefund', function (Check $c, SoapClient $s) {
    $r = call($s, 'cancelRefund', 'refundParams', ['sourceType' => str('return'), 'sourceId' => long(601),
        'paymentId' => str('21')]);
    $c->success($r);
    $c->keys('response', $r, ['errors', 'result']);
    $c->keys('result', field($r, 'result'), ['resultStatus']);
    $c->eq('result.resultStatus', field($r, 'result.resultStatus'), 'true');
});

$listKeys = ['sourceType', 'sourceId', 'paymentId', 'refundValue', 'refundCurrency'];
$pageKeys = ['errors', 'results', 'resultsNumberAll', 'resultsNumberPage', 'resultsPage', 'resultsLimit'];

// 10, 11
foreach ([[0, '22', '30.00'], [1, '23', '40.00']] as $n => [$page, $paymentId, $value]) {
    step(sprintf('%02d-retrieveRefundsList-page%d', 10 + $n, $page),
        function (Check $c, SoapClient $s) use ($listKeys, $pageKeys, $page, $paymentId, $value) {
            $r = call($s, 'retrieveRefundsList', 'retrieveRefundsListParams', ['sourceType' => str('all'),
                'resultsPage' => int32($page), 'resultsLimit' => int32(1)]);
            $c->success($r);
            $c->keys('response', $r, $pageKeys);
            $list = many(field($r, 'results'));
            $c->eq('count(results)', count($list), 1);
            if ($list) {
                $e = $list[0];
                $c->keys('results[0]', $e, $listKeys);
                $c->eq('results[0].sourceType', field($e, 'sourceType'), 'return');
                $c->eq('results[0].sourceId', field($e, 'sourceId'), '603');
                $c->eq('results[0].paymentId', field($e, 'paymentId'), $paymentId);
                $c->eq('results[0].refundValue', field($e, 'refundValue'), $value);
                $c->eq('results[0].refundCurrency', field($e, 'refundCurrency'), 'PLN');
            }
            $c->eq('resultsNumberAll', field($r, 'resultsNumberAll'), '2');
            $c->eq('resultsNumberPage', field($r, 'resultsNumberPage'), '2');
            $c->eq('resultsPage', field($r, 'resultsPage'), (string) $page);
            $c->eq('resultsLimit', field($r, 'resultsLimit'), '1');
        });
}

// 12
step('12-addAutomaticRefundForOrder-4003', function (Check $c, SoapClient $s) {
    $r = call($s, 'addAutomaticRefundForOrder', 'addAutomaticRefundForOrderParams', ['sourceId' => long(2001),
        'paymentId' => str('11'), 'refundValue' => dec('1000.00'), 'refundCurrency' => str('PLN')]);
    $c->fault($r, 4003);
});

// 13
step('13-addManualRefund-4004', function (Check $c, SoapClient $s) {
    $r = call($s, 'addManualRefund', 'addManualRefundParams', ['sourceType' => str('order'), 'sourceId' => long(2001),
        'refundValue' => dec('5.00'), 'refundCurrency' => str('EUR'),
        'refundDetails' => struct('refundDetails', ['paymentFormId' => long(1)])]);
    $c->fault($r, 4004);
});

// 14
step('14-cancelRefund-4019', function (Check $c, SoapClient $s) use ($refund20) {
    $r = call($s, 'cancelRefund', 'refundParams', $refund20);
    $c->fault($r, 4019);
});

// 15
step('15-getRefundStatus-bad-key', function (Check $c, SoapClient $s) use ($refund20, $badKey) {
    $r = call($s, 'getRefundStatus', 'refundParams', $refund20, $badKey);
    $c->fault($r, 1);
});

// Informational: a plain associative array, which PHP encodes in the Apache SOAP "Map" encoding
// (`<param0 xsi:type="ns2:Map"><item><key xsi:type="xsd:string">authenticate</key><value
// xsi:type="ns2:Map">…`). Read-only (getRefundStatus of refund 20, which step 8 saw Processing),
// so it changes nothing whatever the server makes of it. INFO, never FAIL, when unsupported.
step('legacy-map-encoding', function (Check $c, SoapClient $s) use ($statusKeys, $login, $key) {
    $ret = $s->__soapCall('getRefundStatus', [[
        'authenticate' => ['userLogin' => $login, 'authenticateKey' => $key],
        'params' => ['sourceType' => 'order', 'sourceId' => 2001, 'paymentId' => '20'],
    ]]);
    $r = response($ret);
    $code = field($r, 'errors.faultCode');
    if ($code !== '0') {
        $c->problems[] = 'not supported: the server answered faultCode ' . show($code) . ' ('
            . show(field($r, 'errors.faultString')) . ') to a correct call in PHP\'s Map encoding'
            . ' (request and response on stderr and in WORK_DIR)';
        return;
    }
    $c->success($r);
    $c->keys('response', $r, ['errors', 'result']);
    $c->keys('result', field($r, 'result'), $statusKeys);
    $c->eq('result.refundStatus', field($r, 'result.refundStatus'), 'Processing');
    $c->eq('result.refundValue', field($r, 'result.refundValue'), '45.50');
    $c->eq('result.refundCurrency', field($r, 'result.refundCurrency'), 'PLN');
}, true);

exit($failures > 0 ? 1 : 0);
