'use strict';
// Interop client: the npm package `soap` (node-soap), created from the live WSDL, runs the
// lifecycle of tests/interop/README.md on port RefundsSoap (SOAP_VERSION 1.1) or RefundsSoap12
// with forceSoap12Headers (1.2), and asserts every value.
//
// node-soap turns an element it cannot match to the WSDL schema into a plain string (or null when
// empty) instead of failing, so the checks are typed: ids and counts must come back as numbers,
// booleans as booleans, lists as arrays, money through a customDeserializer that keeps the lexical
// form (node-soap's default turns xs:decimal into a float, losing 45.50's scale). Every response is
// also checked for the SOAP version of its envelope and its Content-Type.

const crypto = require('crypto');
const soap = require('soap');
const sax = require('sax');

const SOAP11_NS = 'http://schemas.xmlsoap.org/soap/envelope/';
const SOAP12_NS = 'http://www.w3.org/2003/05/soap-envelope';
const TNS = 'urn:refunds-gateway:refunds';

/** An xs:decimal as node-soap delivered it, with its lexical form kept. */
class Dec {
  constructor(text) {
    this.text = text;
  }
  toString() {
    return this.text;
  }
}

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.log(`FAIL setup: environment variable ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const WSDL_URL = env('WSDL_URL');
const SOAP_VERSION = env('SOAP_VERSION');
const LOGIN = env('GATEWAY_LOGIN');
const PASSWORD = env('GATEWAY_PASSWORD');

const sha1 = (s) => crypto.createHash('sha1').update(s, 'utf8').digest('hex');

function warsawDay() {
  // yyyyMMdd of today in Europe/Warsaw.
  const parts = new Intl.DateTimeFormat('en-CA', {
    timeZone: 'Europe/Warsaw', year: 'numeric', month: '2-digit', day: '2-digit',
  }).formatToParts(new Date());
  const get = (t) => parts.find((p) => p.type === t).value;
  return `${get('year')}${get('month')}${get('day')}`;
}

const AUTH = { userLogin: LOGIN, authenticateKey: sha1(warsawDay() + sha1(PASSWORD)) };

// ------------------------------------------------------------------ checks

let passes = 0;
let failures = 0;

function repr(v) {
  if (v instanceof Dec) return `Dec(${v.text})`;
  return JSON.stringify(v);
}

function eq(p, what, want, got) {
  if (got === undefined || got === null) p.push(`${what} missing (${got}), want ${repr(want)}`);
  else if (got !== want) p.push(`${what} = ${repr(got)} (${typeof got}), want ${repr(want)} (${typeof want})`);
}

/** Money: exactly the lexical form expected (45.50, not 45.5) and numerically equal. */
function money(p, what, want, got) {
  if (got === undefined || got === null) {
    p.push(`${what} missing (${got}), want ${want}`);
  } else if (!(got instanceof Dec)) {
    p.push(`${what} = ${repr(got)} (${typeof got}) was not read as xs:decimal, want ${want}`);
  } else if (Number(got.text) !== Number(want)) {
    p.push(`${what} = ${got.text}, want ${want}`);
  } else if (got.text !== want) {
    p.push(`${what} = ${got.text}, want ${want} written with the same scale`);
  }
}

function errors(p, body, code) {
  const e = body && body.errors;
  if (!e) {
    p.push(`errors missing, want faultCode ${code}`);
    return;
  }
  if (e.faultCode !== code) {
    p.push(`errors.faultCode = ${repr(e.faultCode)} (${typeof e.faultCode}) "${e.faultString}", want ${code}`);
  }
  if (typeof e.faultString !== 'string') p.push(`errors.faultString = ${repr(e.faultString)}, want a string`);
  else if (code !== 0 && e.faultString === '') p.push(`errors.faultString empty for faultCode ${code}`);
}

function list(body, name) {
  return body ? body[name] : undefined;
}

/**
 * From the raw response XML: the envelope's qualified name, and the elements inside the Body that
 * are not in the target namespace (node-soap itself matches local names only, so it would not
 * notice an unqualified or wrongly qualified element).
 */
function inspectRaw(xml) {
  const parser = sax.parser(true, { xmlns: true });
  let envelope = null;
  const foreign = [];
  const stack = [];
  parser.onopentag = (t) => {
    if (envelope === null) envelope = `{${t.uri}}${t.local}`;
    const inBody = stack.length >= 2 && stack[1] === 'Body';
    if (inBody && t.uri !== TNS && foreign.length < 5) foreign.push(`{${t.uri}}${t.local}`);
    stack.push(t.local);
  };
  parser.onclosetag = () => stack.pop();
  try {
    parser.write(xml).close();
  } catch (e) {
    return { envelope: `not well-formed XML: ${e.message.split('\n')[0]}`, foreign };
  }
  return { envelope, foreign };
}

let client;

function checkRaw(p) {
  const raw = client.lastResponse;
  if (typeof raw !== 'string' || raw === '') {
    p.push('no response captured');
    return;
  }
  const wantNs = SOAP_VERSION === '1.2' ? SOAP12_NS : SOAP11_NS;
  const { envelope, foreign } = inspectRaw(raw);
  if (envelope !== `{${wantNs}}Envelope`) p.push(`response envelope is ${envelope}, want {${wantNs}}Envelope`);
  if (foreign.length) p.push(`response Body holds elements outside ${TNS}: ${foreign.join(', ')}`);
  const headers = client.lastResponseHeaders || {};
  const ct = headers['content-type'];
  const wantCt = SOAP_VERSION === '1.2' ? 'application/soap+xml' : 'text/xml';
  if (!ct || !String(ct).toLowerCase().startsWith(wantCt)) p.push(`response Content-Type ${ct}, want ${wantCt}; charset=utf-8`);
}

async function step(name, fn) {
  const p = [];
  client.lastRequest = undefined;
  client.lastResponse = undefined;
  client.lastResponseHeaders = undefined;
  try {
    await fn(p);
  } catch (e) {
    let why = `exception ${e && e.message ? e.message.split('\n')[0] : String(e)}`;
    if (e && e.root && e.root.Envelope) why += ` (SOAP Fault ${JSON.stringify(e.root.Envelope.Body)})`;
    p.push(why);
  }
  checkRaw(p);
  if (p.length === 0) {
    passes++;
    console.log(`PASS ${name}`);
  } else {
    failures++;
    console.log(`FAIL ${name}: ${p.join('; ')}`);
    console.error(`---- ${name}: request`);
    console.error(client.lastRequest || '<none captured>');
    console.error(`---- ${name}: response (Content-Type ${(client.lastResponseHeaders || {})['content-type']})`);
    console.error(client.lastResponse || '<none captured>');
  }
}

// ------------------------------------------------------------------ the lifecycle

async function main() {
  const soap12 = SOAP_VERSION === '1.2';
  if (!soap12 && SOAP_VERSION !== '1.1') {
    console.log(`FAIL setup: SOAP_VERSION must be 1.1 or 1.2, got ${SOAP_VERSION}`);
    process.exit(2);
  }
  try {
    client = await soap.createClientAsync(WSDL_URL, {
      forceSoap12Headers: soap12,
      customDeserializer: { decimal: (text) => new Dec(text) },
      wsdl_options: { timeout: 10000 },
    });
  } catch (e) {
    console.log(`FAIL setup: createClientAsync(${WSDL_URL}): ${e && e.message}`);
    process.exit(1);
  }
  const portName = soap12 ? 'RefundsSoap12' : 'RefundsSoap';
  const port = client.RefundsService && client.RefundsService[portName];
  if (!port) {
    console.log(`FAIL setup: no port RefundsService.${portName} in ${JSON.stringify(Object.keys(client.describe()))}`);
    process.exit(1);
  }
  console.error(`endpoint ${client.wsdl.services.RefundsService.ports[portName].location}, port ${portName}, SOAP ${SOAP_VERSION}`);

  // Call one operation of the chosen port; resolves to the parsed response element.
  const call = (op, args) => new Promise((resolve, reject) => {
    port[op](args, (err, result) => (err ? reject(err) : resolve(result)), { timeout: 30000 });
  });

  await step('01 getPossibleAutoRefunds(order 2001)', async (p) => {
    const r = await call('getPossibleAutoRefunds', { authenticate: AUTH, params: { sourceType: 'order', sourceId: 2001 } });
    errors(p, r, 0);
    const res = list(r, 'results');
    if (!Array.isArray(res) || res.length !== 1) {
      p.push(`results: want an array of exactly 1, got ${repr(res)}`);
      return;
    }
    eq(p, 'results[0].paymentId', '11', res[0].paymentId);
    money(p, 'results[0].value', '200.00', res[0].value);
    eq(p, 'results[0].refundType', 'full', res[0].refundType);
    eq(p, 'results[0].refundCurrency', 'PLN', res[0].refundCurrency);
  });

  const refundId = (p, r, id) => {
    if (!r || !r.result) p.push(`result missing, want refundId ${id}`);
    else eq(p, 'result.refundId', id, r.result.refundId);
  };

  await step('02 addAutomaticRefundForOrder(2001, 11, 40.00 PLN)', async (p) => {
    const r = await call('addAutomaticRefundForOrder', {
      authenticate: AUTH,
      params: { sourceId: 2001, paymentId: '11', refundValue: '40.00', refundCurrency: 'PLN' },
    });
    errors(p, r, 0);
    refundId(p, r, 20);
  });

  await step('03 addManualRefund(return 601, 10.00 PLN, paymentFormId 2)', async (p) => {
    const r = await call('addManualRefund', {
      authenticate: AUTH,
      params: {
        sourceType: 'return', sourceId: 601, refundValue: '10.00', refundCurrency: 'PLN',
        refundDetails: { paymentFormId: 2, account: 'PL61109010140000071219812874' },
      },
    });
    errors(p, r, 0);
    refundId(p, r, 21);
  });

  await step('04 addAutomaticRefund(return 603)', async (p) => {
    const r = await call('addAutomaticRefund', { authenticate: AUTH, params: { sourceType: 'return', sourceId: 603 } });
    errors(p, r, 0);
    refundId(p, r, 22);
  });

  await step('05 updateRefund(order 2001, 20, 45.50 PLN)', async (p) => {
    const r = await call('updateRefund', {
      authenticate: AUTH,
      params: { sourceType: 'order', sourceId: 2001, paymentId: '20', refundValue: '45.50', refundCurrency: 'PLN' },
    });
    errors(p, r, 0);
    if (!r || !r.result) p.push('result missing, want updateResult true');
    else eq(p, 'result.updateResult', true, r.result.updateResult);
  });

  const ref = (sourceType, sourceId, paymentId) => ({ sourceType, sourceId, paymentId });
  const DATE = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/;

  // getRefundStatus(order 2001, 20): the wanted status, 45.50 PLN, a dated refundDateAdd, and either an
  // empty refundDateConfirm and refundExternalId (not confirmed) or a dated refundDateConfirm.
  const status = async (p, wantStatus, confirmed) => {
    const r = await call('getRefundStatus', { authenticate: AUTH, params: ref('order', 2001, '20') });
    errors(p, r, 0);
    const s = r && r.result;
    if (!s) {
      p.push('result missing');
      return;
    }
    eq(p, 'result.refundStatus', wantStatus, s.refundStatus);
    money(p, 'result.refundValue', '45.50', s.refundValue);
    eq(p, 'result.refundCurrency', 'PLN', s.refundCurrency);
    if (typeof s.refundDateAdd !== 'string' || !DATE.test(s.refundDateAdd)) {
      p.push(`result.refundDateAdd = ${repr(s.refundDateAdd)}, want YYYY-MM-DD HH:MM:SS`);
    }
    if (!confirmed) {
      eq(p, 'result.refundDateConfirm', '', s.refundDateConfirm);
      eq(p, 'result.refundExternalId', '', s.refundExternalId);
    } else if (typeof s.refundDateConfirm !== 'string' || !DATE.test(s.refundDateConfirm)) {
      p.push(`result.refundDateConfirm = ${repr(s.refundDateConfirm)}, want a non-empty YYYY-MM-DD HH:MM:SS`);
    }
  };

  await step('06 getRefundStatus(order 2001, 20) = New 45.50', (p) => status(p, 'New', false));

  await step('07 confirmRefund(order 2001, 20)', async (p) => {
    const r = await call('confirmRefund', { authenticate: AUTH, params: ref('order', 2001, '20') });
    errors(p, r, 0);
    if (!r || !r.result) p.push('result missing, want confirmResult true');
    else eq(p, 'result.confirmResult', true, r.result.confirmResult);
  });

  await step('08 getRefundStatus(order 2001, 20) = Processing', (p) => status(p, 'Processing', true));

  await step('09 cancelRefund(return 601, 21)', async (p) => {
    const r = await call('cancelRefund', { authenticate: AUTH, params: ref('return', 601, '21') });
    errors(p, r, 0);
    if (!r || !r.result) p.push('result missing, want resultStatus true');
    else eq(p, 'result.resultStatus', true, r.result.resultStatus);
  });

  const page = async (p, resultsPage, paymentId, value) => {
    const r = await call('retrieveRefundsList', {
      authenticate: AUTH, params: { sourceType: 'all', resultsPage, resultsLimit: 1 },
    });
    errors(p, r, 0);
    eq(p, 'resultsNumberAll', 2, r && r.resultsNumberAll);
    eq(p, 'resultsNumberPage', 2, r && r.resultsNumberPage);
    eq(p, 'resultsPage', resultsPage, r && r.resultsPage);
    eq(p, 'resultsLimit', 1, r && r.resultsLimit);
    const res = list(r, 'results');
    if (!Array.isArray(res) || res.length !== 1) {
      p.push(`results: want an array of exactly 1, got ${repr(res)}`);
      return;
    }
    eq(p, 'results[0].sourceType', 'return', res[0].sourceType);
    eq(p, 'results[0].sourceId', 603, res[0].sourceId);
    eq(p, 'results[0].paymentId', paymentId, res[0].paymentId);
    money(p, 'results[0].refundValue', value, res[0].refundValue);
    eq(p, 'results[0].refundCurrency', 'PLN', res[0].refundCurrency);
  };
  await step('10 retrieveRefundsList(all, page 0, limit 1)', (p) => page(p, 0, '22', '30.00'));
  await step('11 retrieveRefundsList(all, page 1, limit 1)', (p) => page(p, 1, '23', '40.00'));

  await step('12 addAutomaticRefundForOrder(2001, 11, 1000.00 PLN) = 4003', async (p) => {
    const r = await call('addAutomaticRefundForOrder', {
      authenticate: AUTH,
      params: { sourceId: 2001, paymentId: '11', refundValue: '1000.00', refundCurrency: 'PLN' },
    });
    errors(p, r, 4003);
    if (r && r.result !== undefined) p.push(`result present (${repr(r.result)}), want none`);
  });

  await step('13 addManualRefund(order 2001, 5.00 EUR) = 4004', async (p) => {
    const r = await call('addManualRefund', {
      authenticate: AUTH,
      params: {
        sourceType: 'order', sourceId: 2001, refundValue: '5.00', refundCurrency: 'EUR',
        refundDetails: { paymentFormId: 1 },
      },
    });
    errors(p, r, 4004);
    if (r && r.result !== undefined) p.push(`result present (${repr(r.result)}), want none`);
  });

  await step('14 cancelRefund(order 2001, 20) = 4019', async (p) => {
    const r = await call('cancelRefund', { authenticate: AUTH, params: ref('order', 2001, '20') });
    errors(p, r, 4019);
    if (r && r.result && r.result.resultStatus === true) p.push('result.resultStatus true on a failed cancel');
  });

  await step('15 getRefundStatus with a wrong authenticateKey = 1', async (p) => {
    const bad = { userLogin: LOGIN, authenticateKey: sha1(`not-${AUTH.authenticateKey}`) };
    const r = await call('getRefundStatus', { authenticate: bad, params: ref('order', 2001, '20') });
    errors(p, r, 1);
    if (r && r.result !== undefined) p.push(`result present on a login failure (${repr(r.result)})`);
  });

  console.log(`# node-soap ${require('soap/package.json').version} SOAP ${SOAP_VERSION}: ${passes} passed, ${failures} failed`);
  process.exit(failures === 0 ? 0 : 1);
}

main().catch((e) => {
  console.log(`FAIL setup: ${e && e.stack ? e.stack.split('\n')[0] : e}`);
  process.exit(1);
});
