// The operator console as an operator uses it, in headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core; no browser is
// downloaded). Started by tests/tests/console_browser.rs, which prepares
// the database, a worker and the console, and passes:
//   CONSOLE_URL, CONSOLE_TOKEN (admin), CONNECTION_ID, FAILED_JOB,
//   INVOICE_ID, SCREENSHOTS (a directory), CHROMIUM (the browser's path).
// Scenario: log in, filter the failed jobs, retry one and see it complete
// (live update), pause a connection and see its sync wait with the reason;
// a screenshot of each page.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env("CONSOLE_URL");
const token = env("CONSOLE_TOKEN");
const connection = env("CONNECTION_ID");
const failedJob = env("FAILED_JOB");
const invoice = env("INVOICE_ID");
const shots = env("SCREENSHOTS");
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // Root in CI containers: Chromium's sandbox needs user namespaces.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const shot = async (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

  // Log in: the guarded page sends the browser to the form, and back.
  await page.goto(`${base}/jobs`);
  assert.match(page.url(), /\/login\?next=%2Fjobs$/);
  await shot("login");
  await page.fill("input[name=token]", token);
  await page.click("button[type=submit]");
  await page.waitForURL(`${base}/jobs`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "lf_session");
  assert.ok(session, "a session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.secure, true);
  assert.equal(session.sameSite, "Strict");

  // Filter the failed jobs.
  await page.selectOption("select[name=state]", "failed");
  await page.click("form.filters button[type=submit]");
  await page.waitForURL(/state=failed/);
  const rows = page.locator("#jobs tbody tr[data-job]");
  assert.ok((await rows.count()) >= 1, "failed jobs are listed");
  for (const state of await page.locator("#jobs tbody tr[data-job] td.job-state").allInnerTexts()) {
    assert.equal(state, "failed");
  }
  await shot("jobs-failed");

  // Retry one and see it complete: its page updates itself (live).
  await page.check(`input[name=ids][value="${failedJob}"]`);
  await page.click("#selected button[name=action][value=retry]");
  await page.waitForURL(/done=/);
  assert.match(await page.locator(".notice").innerText(), new RegExp(`job ${failedJob}: queued again`));
  await page.goto(`${base}/jobs/${failedJob}`);
  await page
    .locator("h1 .state", { hasText: "completed" })
    .waitFor({ timeout: 30000 });
  await shot("job-detail");

  // Overview, with its chart.
  await page.goto(`${base}/`);
  assert.ok(await page.locator("svg.chart").count(), "an inline chart");
  await shot("overview");

  // Pause the connection: its re-sync waits, and the dialog says why.
  await page.goto(`${base}/tenants`);
  await page
    .locator(`tr[data-connection="${connection}"] button`, { hasText: "Pause syncs" })
    .click();
  await page.waitForURL(/done=/);
  assert.match(await page.locator(".notice").innerText(), /paused/);
  await page.locator(`tr[data-connection="${connection}"]`, { hasText: "paused from the console" }).waitFor();
  await shot("tenants");
  await page.goto(`${base}/invoices?invoice=${encodeURIComponent(invoice)}&connection=${connection}`);
  await page.locator("button", { hasText: "Re-sync" }).click();
  await page.waitForURL(/done=/);
  await page.locator(".dialog .waiting", { hasText: "paused by an operator" }).waitFor({ timeout: 15000 });
  const status = await page.locator(".dialog dl.facts dd .state").first().innerText();
  assert.equal(status, "pending");
  await shot("invoices");

  // Every other page, for the record.
  for (const [path, name] of [
    [`/connections/${connection}`, "connection"],
    ["/workflows", "workflows"],
    ["/backfills", "backfills"],
    ["/schedules", "schedules"],
    ["/summaries", "summaries"],
    ["/audit", "audit"],
  ]) {
    const r = await page.goto(`${base}${path}`);
    assert.equal(r.status(), 200, path);
    await shot(name);
  }
  assert.ok(await page.locator("#audit", { hasText: "connection.pause" }).count());

  const foreign = requests.filter((u) => !u.startsWith(base));
  assert.deepEqual(foreign, [], "every asset from the console itself");
  console.log("console browser scenario: ok");
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
