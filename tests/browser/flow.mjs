// End-to-end browser test of the web application in headless Chromium (Debian's package), against
// the real stack: `ehr dev` (anvil, Kubo, five share nodes, gateway) started on free ports with a
// throw-away state folder.
//
//   node tests/browser/flow.mjs            # uses target/debug/ehr (EHR_BIN overrides)
//
// The story: a patient signs up, uploads a FHIR record and grants doctor1; doctor1 opens the
// record and reads it; the patient revokes; doctor1 is denied and the denial shows on the
// patient's audit trail and the records office's dashboard. Around it: a provider signs up and is
// verified by the office, roles cannot reach each other's pages or forms, CSRF and logout work,
// and no page overflows a phone screen. Screenshots of every main page at desktop and phone width
// go to artifacts/screenshots/.

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(path.join(root, 'tools/node/package.json'));
const { chromium } = require('playwright-core');

const ehrBin = process.env.EHR_BIN ?? path.join(root, 'target/debug/ehr');
const shotsDir = path.join(root, 'artifacts/screenshots');
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
// Demo users of `ehr dev` (development passwords, printed by `ehr dev`).
const DOCTOR1 = { user: 'doctor1', password: 'doctor1-password', address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8' };
const OFFICE = { user: 'office', password: 'office-password' };

const log = (m) => console.log(`[browser] ${m}`);

/** A base port with `n` consecutive free ports. */
async function freeRange(n) {
  for (let attempt = 0; attempt < 50; attempt++) {
    // Below Linux's ephemeral range (32768-60999): the share nodes bind these ports a few
    // seconds after this check, and an outgoing connection must not take one meanwhile.
    const base = 20000 + Math.floor(Math.random() * 12000);
    const ok = await Promise.all(
      Array.from({ length: n }, (_, i) => new Promise((resolve) => {
        const s = net.createServer();
        s.once('error', () => resolve(false));
        s.listen(base + i, '127.0.0.1', () => s.close(() => resolve(true)));
      })),
    );
    if (ok.every(Boolean)) return base;
  }
  throw new Error('no free port range');
}

/** Starts `ehr dev` and resolves when it prints that it is up. */
async function startStack() {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'ehr-browser-'));
  // One block of nine ports: separate picks, none bound yet, could return the same port twice.
  const ports = await freeRange(9);
  const env = {
    ...process.env,
    EHR_STATE_DIR: state,
    EHR_PROJECT_DIR: root,
    EHR_ANVIL_CONFIG: path.join(root, 'anvil.toml'),
    EHR_GATEWAY_PORT: String(ports),
    EHR_ANVIL_PORT: String(ports + 1),
    EHR_KUBO_API_PORT: String(ports + 2),
    EHR_KUBO_GATEWAY_PORT: String(ports + 3),
    EHR_SHARE_NODE_BASE_PORT: String(ports + 4),
    // Device readings are sealed into records two seconds after they arrive.
    EHR_DEV_INGEST_WINDOW_SECS: '2',
    RUST_LOG: process.env.RUST_LOG ?? 'warn',
  };
  const child = spawn(ehrBin, ['dev'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const up = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ehr dev not up in 120 s:\n${output}`)), 120_000);
    const onData = (d) => {
      output += d;
      if (output.includes('ehr dev is up')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`ehr dev exited with ${code}:\n${output}`));
    });
  });
  await up;
  const base = `http://127.0.0.1:${env.EHR_GATEWAY_PORT}`;
  return {
    base,
    rpc: `http://127.0.0.1:${env.EHR_ANVIL_PORT}`,
    deployment: path.join(state, 'deployment.json'),
    output: () => output,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      fs.rmSync(state, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
    },
  };
}

/** Screenshots of the current page at desktop and phone width, and no sideways scrolling on the phone. */
async function shoot(page, name) {
  for (const [label, size] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await page.setViewportSize(size);
    await page.screenshot({ path: path.join(shotsDir, `${name}-${label}.png`), fullPage: true });
    if (label === 'phone') {
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 1, `${name}: the page is ${overflow}px wider than a phone screen`);
    }
  }
  await page.setViewportSize(DESKTOP);
}

/** Validates a FHIR R4 file with the HL7 validator (HAPI FHIR, installed by scripts/setup). */
async function validateFhir(file) {
  const lib = path.join(root, '.tools/fhir-validator/lib');
  assert.ok(fs.existsSync(lib), 'the FHIR validator is missing: run scripts/setup');
  const out = await new Promise((resolve, reject) => {
    const java = spawn('java', ['-cp', `${lib}/*`, path.join(root, 'tools/fhir-validator/Validate.java'), file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    java.stdout.on('data', (d) => { text += d; });
    java.stderr.on('data', (d) => { text += d; });
    java.once('error', reject);
    java.once('exit', (code) => resolve({ code, text }));
  });
  log(`FHIR validator: ${out.text.split('\n')[0]}`);
  assert.equal(out.code, 0, `the audit bundle does not validate as FHIR R4:\n${out.text}`);
}

async function login(browser, base, who) {
  const ctx = await browser.newContext({ viewport: DESKTOP });
  const page = await ctx.newPage();
  await page.goto(`${base}/`);
  await page.fill('input[name=username]', who.user);
  await page.fill('input[name=password]', who.password);
  await Promise.all([page.waitForNavigation(), page.click('button:has-text("Log in")')]);
  return { ctx, page };
}

/** The status of a GET in this browser context (cookies included, redirects not followed). */
async function statusOf(page, url) {
  const r = await page.request.get(url, { maxRedirects: 0 });
  return r.status();
}

async function notice(page) {
  return (await page.locator('.msg').first().textContent()).trim();
}

async function main() {
  fs.mkdirSync(shotsDir, { recursive: true });
  log(`starting ${ehrBin} dev`);
  const t0 = Date.now();
  const stack = await startStack();
  log(`stack up at ${stack.base} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
  });
  try {
    await flow(browser, stack.base);
    await devices(browser, stack);
    log(`passed in ${((Date.now() - t0) / 1000).toFixed(1)} s; screenshots in ${path.relative(root, shotsDir)}/`);
  } catch (e) {
    console.error(`[browser] FAILED: ${e.stack ?? e}`);
    console.error(`[browser] last output of ehr dev:\n${stack.output().split('\n').slice(-40).join('\n')}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
    await stack.stop();
  }
}

async function flow(browser, base) {
  const suffix = Math.floor(Math.random() * 1e9);
  const patient = { user: `pat-${suffix}`, password: 'a long patient password', aid: '9', pid: String(suffix + 1) };
  const addr = `${patient.aid}-${patient.pid}`;

  // ---------------------------------------------------------------- sign-up page, unauthenticated
  const anon = await browser.newContext({ viewport: DESKTOP });
  const anonPage = await anon.newPage();
  await anonPage.goto(`${base}/`);
  await shoot(anonPage, 'login');
  assert.equal(await statusOf(anonPage, `${base}/patient`), 303, 'pages need a login');
  await anonPage.fill('input[name=username]', DOCTOR1.user);
  await anonPage.fill('input[name=password]', 'not the password');
  await Promise.all([anonPage.waitForNavigation(), anonPage.click('button:has-text("Log in")')]);
  assert.match(await notice(anonPage), /unknown user or wrong password/);

  // ---------------------------------------------------------------- patient signs up
  log(`patient ${patient.user} signs up as ${addr}`);
  const pctx = await browser.newContext({ viewport: DESKTOP });
  const p = await pctx.newPage();
  await p.goto(`${base}/signup`);
  await shoot(p, 'signup');
  await p.fill('input[name=username]', patient.user);
  await p.fill('input[name=password]', patient.password);
  await p.selectOption('select[name=role]', 'patient');
  await p.fill('input[name=aid]', patient.aid);
  await p.fill('input[name=pid]', patient.pid);
  await Promise.all([p.waitForURL(`${base}/patient`), p.click('button:has-text("Create account")')]);
  // Addresses are issued by the records office, never self-claimed: the patient waits.
  assert.match(await p.textContent('main'), new RegExp(`Your patient address ${addr} is not issued`));
  await shoot(p, 'patient-waiting');
  log('the records office issues the address');
  const { ctx: octx, page: early } = await login(browser, base, OFFICE);
  const waitingRow = early.locator('section', { hasText: 'Patients waiting' }).locator('tr', { hasText: patient.user });
  await Promise.all([early.waitForNavigation(), waitingRow.locator(`button:has-text("Issue ${addr}")`).click()]);
  assert.match(await notice(early), new RegExp(`issued ${addr} to ${patient.user}`));
  await octx.close();
  await p.reload();
  assert.match(await p.locator('h2').first().textContent(), new RegExp(`patient ${addr}`));
  const cookie = (await pctx.cookies()).find((c) => c.name === 'ehr_session');
  assert.ok(cookie.httpOnly, 'session cookie is HttpOnly');
  assert.equal(cookie.sameSite, 'Strict');

  // The same Addr cannot be taken twice.
  const dup = await browser.newContext();
  const dp = await dup.newPage();
  await dp.goto(`${base}/signup`);
  await dp.fill('input[name=username]', `dup-${suffix}`);
  await dp.fill('input[name=password]', patient.password);
  await dp.fill('input[name=aid]', patient.aid);
  await dp.fill('input[name=pid]', patient.pid);
  await Promise.all([dp.waitForNavigation(), dp.click('button:has-text("Create account")')]);
  assert.match(await notice(dp), new RegExp(`patient address ${addr} is already registered`));
  await dup.close();

  // ---------------------------------------------------------------- upload a FHIR record
  const fhir = {
    resourceType: 'Observation',
    id: `glucose-${suffix}`,
    status: 'final',
    code: { text: 'Fasting glucose' },
    effectiveDateTime: '2026-11-24T08:00:00Z',
    valueQuantity: { value: 5.4, unit: 'mmol/L' },
  };
  const upload = async (name, mimeType, buffer) => {
    await p.setInputFiles('input[type=file]', { name, mimeType, buffer });
    await Promise.all([p.waitForNavigation(), p.click('button:has-text("Upload")')]);
    return notice(p);
  };
  // Invalid FHIR is refused in words and stores nothing.
  const refused = await upload('broken.json', 'application/json', Buffer.from('{"resourceType":"Nope"}'));
  assert.match(refused, /unknown FHIR R4 resourceType/);
  assert.match(await p.locator('section').first().textContent(), /No records yet/);
  const stored = await upload('glucose.json', 'application/json', Buffer.from(JSON.stringify(fhir)));
  assert.match(stored, /stored glucose\.json as record 0x[0-9a-f]{64}/);
  const recordId = stored.match(/0x[0-9a-f]{64}/)[0];
  const row = p.locator('tr', { hasText: 'glucose.json' });
  assert.match(await row.textContent(), /application\/fhir\+json/);
  assert.match(await row.textContent(), /\d+(\.\d)? (B|KiB)/, 'the list shows the size');
  log(`stored record ${recordId}`);

  // Any other file is stored as an attachment with its media type.
  const pdf = Buffer.concat([Buffer.from('%PDF-1.4\n% synthetic scan '), Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251))]);
  const storedPdf = await upload('scan.pdf', 'application/pdf', pdf);
  const pdfId = storedPdf.match(/0x[0-9a-f]{64}/)[0];
  assert.match(await p.locator('tr', { hasText: 'scan.pdf' }).textContent(), /application\/pdf.*68\.\d KiB/s);

  // An oversized upload is refused with 413 in words, and nothing is stored.
  const big = await p.request.post(`${base}/patient/upload`, {
    multipart: {
      csrf: await p.locator('input[name=csrf]').first().inputValue(),
      file: { name: 'big.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc((32 << 20) + 1) },
    },
    maxRedirects: 0,
  });
  assert.equal(big.status(), 413);
  assert.match(await big.text(), /larger than the 32 MiB limit; nothing was stored/);
  await p.reload();
  assert.equal(await p.locator('section', { hasText: 'My records' }).locator('a:has-text("Open")').count(), 2);

  // The patient opens their own record.
  await Promise.all([p.waitForNavigation(), row.locator('a:has-text("Open")').click()]);
  assert.match(await p.textContent('main'), /Fasting glucose/);
  await p.goto(`${base}/patient`);

  // ---------------------------------------------------------------- grant doctor1
  await p.fill('input[name=provider]', DOCTOR1.address);
  await p.fill('input[name=days]', '30');
  await Promise.all([p.waitForNavigation(), p.click('button:has-text("Grant access")')]);
  assert.match(await notice(p), /granted/);
  const grantRow = () => p.locator('section', { hasText: 'Who may see my records' }).locator('tr', { hasText: DOCTOR1.address });
  assert.match(await grantRow().textContent(), /Active/);
  await shoot(p, 'patient');

  // ---------------------------------------------------------------- doctor1 reads it
  log('doctor1 logs in and opens the record');
  const { ctx: dctx, page: d } = await login(browser, base, DOCTOR1);
  assert.equal(new URL(d.url()).pathname, '/doctor');
  assert.match(await d.textContent('main'), new RegExp(addr), 'my patients lists the new grant');
  await shoot(d, 'doctor');
  await d.fill('input[name=addr]', addr);
  await Promise.all([d.waitForNavigation(), d.click('button:has-text("Find")')]);
  assert.match(await d.textContent('main'), /Your access: allowed/);
  await shoot(d, 'doctor-patient');
  // A granted doctor adds a record for the patient; the patient's list shows it, authored by
  // the doctor.
  const note = { resourceType: 'Observation', id: `note-${suffix}`, status: 'final', code: { text: 'Blood pressure at visit' }, valueQuantity: { value: 128, unit: 'mm[Hg]' } };
  await d.setInputFiles('input[type=file]', { name: 'visit-bp.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(note)) });
  await Promise.all([d.waitForNavigation(), d.click('button:has-text("Add record")')]);
  assert.match(await notice(d), new RegExp(`added visit-bp\\.json as record 0x[0-9a-f]{64} for patient ${addr}`));
  const doctorRecordId = (await notice(d)).match(/0x[0-9a-f]{64}/)[0];
  assert.match(await d.locator('tr', { hasText: doctorRecordId.slice(0, 8) }).textContent(), new RegExp(DOCTOR1.address.slice(0, 8)));
  await p.goto(`${base}/patient`);
  assert.match(await p.locator('tr', { hasText: 'visit-bp.json' }).textContent(), /application\/fhir\+json/);
  const t = Date.now();
  await Promise.all([d.waitForNavigation(), d.locator(`a[href="/doctor/records/${recordId}"]`).click()]);
  log(`record opened in ${Date.now() - t} ms (access transaction + shares + IPFS + decrypt)`);
  const content = await d.textContent('main');
  assert.match(content, /Observation/);
  assert.match(content, /Fasting glucose/);
  assert.match(content, /5\.4 mmol\/L/);
  await shoot(d, 'doctor-record');
  // A non-FHIR record downloads, byte-identical, never rendered inline.
  await d.goto(`${base}/doctor/records/${pdfId}`);
  const link = d.locator('a:has-text("Download scan.pdf")');
  const dl = await d.request.get(`${base}${await link.getAttribute('href')}`);
  assert.equal(dl.status(), 200);
  assert.equal(dl.headers()['content-type'], 'application/pdf');
  assert.match(dl.headers()['content-disposition'], /^attachment; filename="scan\.pdf"$/);
  assert.ok(Buffer.compare(await dl.body(), pdf) === 0, 'the download is byte-identical');

  // ---------------------------------------------------------------- role separation
  for (const url of ['/patient', '/office']) {
    assert.equal(await statusOf(d, `${base}${url}`), 403, `a doctor cannot open ${url}`);
  }
  assert.equal(await statusOf(p, `${base}/doctor`), 403, 'a patient cannot open /doctor');
  assert.equal(await statusOf(p, `${base}/office`), 403, 'a patient cannot open /office');
  assert.equal(await statusOf(p, `${base}/doctor/records/${recordId}`), 403, 'a patient cannot use the doctor read');
  const patientCsrf = await p.locator('input[name=csrf]').first().inputValue();
  const forged = await p.request.post(`${base}/office/provider`, {
    form: { csrf: patientCsrf, provider: DOCTOR1.address, decision: 'suspend' },
    maxRedirects: 0,
  });
  assert.equal(forged.status(), 403, 'a patient cannot post an office form');
  const noCsrf = await p.request.post(`${base}/patient/revoke`, {
    form: { csrf: 'wrong', provider: DOCTOR1.address },
    maxRedirects: 0,
  });
  assert.equal(noCsrf.status(), 403, 'a form without the session CSRF token is refused');

  // ---------------------------------------------------------------- patient revokes; doctor denied
  log('patient revokes; doctor1 tries again');
  await p.goto(`${base}/patient`);
  await Promise.all([p.waitForNavigation(), p.click(`button[aria-label="Revoke ${DOCTOR1.address}"]`)]);
  assert.match(await notice(p), /revoked/);
  assert.match(await grantRow().textContent(), /Revoked/);
  const denied = await d.goto(`${base}/doctor/records/${recordId}`);
  assert.equal(denied.status(), 403);
  const deniedText = await d.textContent('main');
  assert.match(deniedText, /access to record 0x[0-9a-f]{64} denied: grant revoked/);
  assert.match(deniedText, /recorded on chain/);
  assert.doesNotMatch(deniedText, /Fasting glucose/);
  await shoot(d, 'doctor-denied');

  // The denial is on the patient's audit trail, newest first, with its transaction hash.
  await p.goto(`${base}/patient`);
  const trail = p.locator('section', { hasText: 'My audit trail' }).locator('tr').nth(1);
  const trailText = await trail.textContent();
  assert.match(trailText, /ACCESS DENIED/);
  assert.match(trailText, /grant revoked/);
  assert.match(trailText, new RegExp(DOCTOR1.address));
  assert.match(await trail.locator('code[title^="0x"]').last().getAttribute('title'), /^0x[0-9a-f]{64}$/);
  assert.equal(await trail.getAttribute('class'), 'denied', 'denials are highlighted');
  await shoot(p, 'patient-audit');

  // ---------------------------------------------------------------- a provider signs up, the office verifies
  const newDoc = { user: `doc-${suffix}`, password: 'a long doctor password' };
  const nctx = await browser.newContext({ viewport: DESKTOP });
  const n = await nctx.newPage();
  await n.goto(`${base}/signup`);
  await n.fill('input[name=username]', newDoc.user);
  await n.fill('input[name=password]', newDoc.password);
  await n.selectOption('select[name=role]', 'provider');
  // A provider without a profile is refused; the form keeps what was typed.
  await Promise.all([n.waitForNavigation(), n.click('button:has-text("Create account")')]);
  assert.match(await notice(n), /provider name: 1 to 100 characters/);
  await n.fill('input[name=password]', newDoc.password);
  await n.fill('input[name=full_name]', `Dr. Test ${suffix}`);
  await n.fill('input[name=organisation]', 'Synthetic Test Clinic');
  await n.fill('input[name=licence]', `LIC-${suffix}`);
  await Promise.all([n.waitForURL(`${base}/doctor`), n.click('button:has-text("Create account")')]);
  assert.match(await n.textContent('main'), /Waiting for the records office to verify you/);
  const newDocAddress = (await n.locator('header span').textContent()).match(/0x[0-9a-fA-F]{6}/)[0];

  log('the records office checks the dashboard and verifies the new provider');
  const { page: o } = await login(browser, base, OFFICE);
  assert.equal(new URL(o.url()).pathname, '/office');
  const deniedRow = o.locator('tr.denied', { hasText: DOCTOR1.address }).first();
  assert.match(await deniedRow.textContent(), /ACCESS DENIED/);
  assert.match(await deniedRow.textContent(), new RegExp(`${addr} record`));
  assert.match(await o.textContent('main'), /IPFS: Kubo [0-9.]+ · ok/);
  assert.equal(await o.locator('section', { hasText: 'Share node' }).locator('td:text-is("ok")').count(), 5);
  const pendingRow = o.locator('tr', { hasText: 'Pending' }).filter({ hasText: newDocAddress.slice(2) });
  assert.match(await pendingRow.textContent(), new RegExp(`Dr\\. Test ${suffix}, Synthetic Test Clinic \\(licence LIC-${suffix}\\)`));
  await shoot(o, 'office');
  await Promise.all([o.waitForNavigation(), pendingRow.locator('button:has-text("Verify")').click()]);
  assert.match(await notice(o), /verified/);
  await n.reload();
  assert.match(await n.textContent('main'), /Verified provider/);
  assert.equal(await statusOf(o, `${base}/patient`), 403, 'the office cannot open patient pages');

  // ---------------------------------------------------------------- request, decline, break-glass
  log('the new provider asks for access, is declined, then breaks the glass');
  await n.goto(`${base}/doctor/patient?addr=${addr}`);
  assert.match(await n.textContent('main'), /Your access: no grant from the patient/);
  await Promise.all([n.waitForNavigation(), n.click('button:has-text("Request access")')]);
  assert.match(await notice(n), /request sent/);
  await p.goto(`${base}/patient`);
  const request = p.locator('section', { hasText: 'Pending requests' }).locator('tr', { hasText: newDocAddress.slice(2) });
  assert.match(await request.textContent(), new RegExp(`Dr\\. Test ${suffix}`), 'the patient sees who asks');
  await Promise.all([p.waitForNavigation(), request.locator('button:has-text("Decline")').click()]);
  assert.match(await notice(p), /declined the request/);
  assert.match(await p.locator('section', { hasText: 'Pending requests' }).textContent(), /No pending requests/);
  await n.goto(`${base}/doctor/patient?addr=${addr}`);
  await n.selectOption('select[name=reason]', 'BTG');
  await Promise.all([n.waitForNavigation(), n.click('button:has-text("Break the glass")')]);
  assert.match(await notice(n), /emergency access open for one hour/);
  assert.match(await n.textContent('main'), /BREAK-GLASS access is open/);
  await Promise.all([n.waitForNavigation(), n.locator(`a[href="/doctor/records/${recordId}"]`).click()]);
  assert.match(await n.textContent('main'), /Fasting glucose/);
  await p.goto(`${base}/patient`);
  const trailNow = await p.locator('section', { hasText: 'My audit trail' }).textContent();
  assert.match(trailNow, /Read \(BREAK-GLASS\)/);
  assert.match(trailNow, /BREAK-GLASS opened/);
  assert.match(trailNow, /reason BTG \(break the glass\)/);
  assert.match(trailNow, /Request declined/);
  // The open emergency is shown prominently, and the patient ends it early.
  const banner = p.locator('section.emergency');
  assert.match(await banner.textContent(), /Emergency access is open/);
  await shoot(p, 'patient-emergency');
  await Promise.all([p.waitForNavigation(), banner.locator('button:has-text("End this emergency access now")').click()]);
  assert.match(await notice(p), /emergency access of 0x[0-9a-fA-F]{40} ended/);
  assert.equal(await p.locator('section.emergency').count(), 0);
  await n.goto(`${base}/doctor/patient?addr=${addr}`);
  assert.match(await n.textContent('main'), /Your access: no grant from the patient/);
  // The audit trail filters to break-glass entries only.
  await p.goto(`${base}/patient?kind=emergency#audit`);
  const onlyEmergency = await p.locator('section', { hasText: 'My audit trail' }).textContent();
  assert.match(onlyEmergency, /BREAK-GLASS opened/);
  assert.match(onlyEmergency, /Emergency access ended by the patient/);
  assert.doesNotMatch(onlyEmergency, /Request declined/);
  // The records office reviews every break-glass.
  await o.reload();
  assert.match(await o.locator('section', { hasText: 'Break-glass review' }).textContent(), /BREAK-GLASS opened/);

  // ---------------------------------------------------------------- audit trail downloads
  log('the patient downloads the audit trail as FHIR and CSV');
  const fhirDl = await p.request.get(`${base}/patient/audit.fhir.json`);
  assert.equal(fhirDl.status(), 200);
  assert.equal(fhirDl.headers()['content-type'], 'application/fhir+json');
  assert.match(fhirDl.headers()['content-disposition'], new RegExp(`^attachment; filename="${addr}-audit-trail\\.fhir\\.json"$`));
  const bundle = JSON.parse(await fhirDl.text());
  assert.equal(bundle.resourceType, 'Bundle');
  const audits = bundle.entry.map((e) => e.resource);
  assert.ok(audits.every((r) => r.resourceType === 'AuditEvent'));
  assert.ok(audits.some((r) => r.outcome === '4' && /grant revoked/.test(r.outcomeDesc)), 'the denial is in the bundle');
  assert.ok(audits.some((r) => r.purposeOfEvent?.[0]?.coding?.[0]?.code === 'BTG'), 'the break-glass purpose is coded');
  const bundleFile = path.join(shotsDir, '..', 'audit-trail.fhir.json');
  fs.writeFileSync(bundleFile, JSON.stringify(bundle, null, 2));
  await validateFhir(bundleFile);
  const csvDl = await p.request.get(`${base}/patient/audit.csv`);
  assert.equal(csvDl.status(), 200);
  const csvLines = (await csvDl.text()).trim().split(/\r?\n/);
  assert.equal(csvLines[0], 'time_utc,block,log_index,tx_hash,event,who,details,denied');
  assert.equal(csvLines.length, audits.length + 1, 'the CSV and the bundle hold the same events');
  assert.ok(csvLines.some((l) => /ACCESS DENIED.*,true$/.test(l)));
  // Each download is itself recorded, for the patient and the records office.
  await p.goto(`${base}/patient`);
  const downloads = p.locator('section', { hasText: 'Downloads of this trail' });
  assert.match(await downloads.textContent(), /FHIR R4 AuditEvent bundle/);
  assert.match(await downloads.textContent(), /CSV/);
  assert.equal(await statusOf(d, `${base}/patient/audit.csv`), 403, 'a doctor cannot download a patient trail');

  // ---------------------------------------------------------------- office monitoring
  await o.goto(`${base}/office`);
  assert.match(await o.locator('section', { hasText: 'Audit trail downloads' }).textContent(), new RegExp(`${addr}.*FHIR R4 AuditEvent bundle`, 's'));
  const chart = o.locator('section#activity');
  assert.ok(await chart.locator('svg rect.denied').count() > 0, 'the chart draws bars');
  assert.match(await chart.textContent(), /\d+ transactions and [1-9]\d* denied attempts/);
  await shoot(o, 'office-monitoring');
  // Filtered to one provider, then to one patient: every row names them.
  await o.goto(`${base}/office?provider=${DOCTOR1.address}#audit`);
  const byProvider = o.locator('section#audit tr').filter({ hasNot: o.locator('th') });
  assert.ok(await byProvider.count() > 0);
  for (const row of await byProvider.all()) assert.match(await row.textContent(), new RegExp(DOCTOR1.address, 'i'));
  await o.goto(`${base}/office?patient=${addr}&kind=denials#audit`);
  const byPatient = o.locator('section#audit tr').filter({ hasNot: o.locator('th') });
  assert.ok(await byPatient.count() > 0);
  for (const row of await byPatient.all()) assert.match(await row.textContent(), new RegExp(`ACCESS DENIED.*${addr}`));

  // ---------------------------------------------------------------- logout ends the session
  await Promise.all([d.waitForNavigation(), d.click('button:has-text("Log out")')]);
  assert.match(await notice(d), /logged out/);
  assert.equal(await statusOf(d, `${base}/doctor`), 303, 'after logout the doctor page needs a login again');
  await dctx.close();
  await pctx.close();
  await nctx.close();
  await anon.close();
}

/** Runs `ehr` with `args`; resolves with its stdout, rejects with its output on failure. */
function ehr(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(ehrBin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`ehr ${args.join(' ')} exited with ${code}:\n${err}`))));
  });
}

/**
 * Devices and charts: simulated devices of demo patient 1 stream readings through the gateway;
 * they are sealed into records; the patient and their granted doctor see the vitals plotted
 * (out-of-range points marked), at desktop and phone width; the patient revokes a device.
 */
async function devices(browser, stack) {
  const { base } = stack;
  log('simulated devices stream readings for patient 1-1001');
  const out = await ehr(['device', 'simulate', '--patient', '1-1001', '--devices', '3', '--rate', '2/s', '--kinds', 'hr,spo2,bp',
    '--duration-secs', '4', '--episode-chance', '0.25', '--gateway', base, '--rpc-url', stack.rpc, '--deployment', stack.deployment, '--dev-account', '3']);
  const summary = JSON.parse(out);
  assert.ok(summary.readings_stored >= 18, `readings stored: ${out}`);
  assert.deepEqual(summary.refused_by_status, {}, 'no reading refused');

  const { ctx, page: p } = await login(browser, base, { user: 'patient1', password: 'patient1-password' });
  const devicesSection = p.locator('section#devices');
  assert.equal(await devicesSection.locator('tr', { hasText: 'simulated' }).count(), 3, 'the three devices are listed');
  // Wait for the windows to be sealed: the charts then show every reading.
  let charts = 0;
  for (let i = 0; i < 60 && charts < 3; i++) {
    await p.goto(`${base}/patient?vitals=day`);
    charts = await p.locator('section#vitals figure.vital').count();
    if (charts < 3) await p.waitForTimeout(500);
  }
  assert.equal(charts, 3, 'heart rate, SpO2 and blood pressure are plotted');
  const vitals = p.locator('section#vitals');
  assert.match(await vitals.textContent(), /Every reading's device signature was checked/);
  assert.ok(await vitals.locator('rect.normal').count() >= 4, 'normal ranges are shaded (two for blood pressure)');
  assert.ok(await vitals.locator('circle.out').count() > 0, 'out-of-range readings are marked');
  await shoot(p, 'patient-vitals');

  log('doctor1 (granted) opens the vitals of 1-1001');
  const { ctx: dctx, page: d } = await login(browser, base, DOCTOR1);
  await d.goto(`${base}/doctor/patient?addr=1-1001`);
  assert.equal(await d.locator('section#vitals figure.vital').count(), 0, 'vitals are read only on a click');
  await Promise.all([d.waitForNavigation(), d.click('a:has-text("last day")')]);
  assert.equal(await d.locator('section#vitals figure.vital').count(), 3);
  await shoot(d, 'doctor-vitals');

  // The patient revokes a device; its row says so.
  const first = devicesSection.locator('tr', { hasText: 'simulated' }).first();
  const address = (await first.locator('code').textContent()).trim();
  await p.goto(`${base}/patient#devices`);
  await Promise.all([p.waitForNavigation(), p.click(`button[aria-label="Revoke device ${address}"]`)]);
  assert.match(await notice(p), /revoked device/);
  assert.match(await p.locator('section#devices tr', { hasText: address }).textContent(), /revoked/);

  // A reading without a signature is refused, and the records office sees it counted.
  const unsigned = await fetch(`${base}/ingest`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ device: address, patient: '1-1001', nonce: 1, time: Math.floor(Date.now() / 1000), resource: { resourceType: 'Observation' } }),
  });
  assert.equal(unsigned.status, 401);
  const { ctx: octx, page: o } = await login(browser, base, OFFICE);
  let counted = '';
  for (let i = 0; i < 40 && !/unsigned/.test(counted); i++) {
    await o.goto(`${base}/office`);
    counted = await o.locator('section#ingest').textContent();
    if (!/unsigned/.test(counted)) await o.waitForTimeout(250);
  }
  assert.match(counted, /readings sealed into \d+ records/);
  assert.match(counted, /unsigned\s*1/, 'the refusal is counted on the dashboard');
  await octx.close();
  await dctx.close();
  await ctx.close();
}

await main();
