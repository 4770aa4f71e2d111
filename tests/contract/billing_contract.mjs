// Contract test in another language for BillingService: a Node.js client built only from the
// .proto files signs in as a tenant administrator, reads its billing account, ledger, plans
// and usage (money as decimal strings with a currency), and meets tenant isolation and the
// staff-only rule.
//
// Usage: node billing_contract.mjs <host:port>   with LIFEBOX_CONTRACT_EMAIL, _PASSWORD and
// _OTHER_CLIENT_ID in the environment. Prints one JSON line; exits non-zero on any mismatch.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const require = createRequire(path.join(root, "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync(
  ["lifebox/v1/auth.proto", "lifebox/v1/billing.proto"],
  { includeDirs: [path.join(root, "protos")], keepCase: true, longs: String, enums: String, defaults: true },
);
const api = grpc.loadPackageDefinition(definition).lifebox.v1;
const address = process.argv[2];
const auth = new api.AuthService(address, grpc.credentials.createInsecure());
const billing = new api.BillingService(address, grpc.credentials.createInsecure());

function call(client, method, request, metadata = new grpc.Metadata()) {
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

async function code(client, method, request, metadata) {
  try {
    await call(client, method, request, metadata);
    return grpc.status.OK;
  } catch (error) {
    return error.code;
  }
}

function fail(message) {
  console.log(JSON.stringify({ ok: false, message }));
  process.exit(1);
}

const env = process.env;
const login = await call(auth, "Login", { email: env.LIFEBOX_CONTRACT_EMAIL, password: env.LIFEBOX_CONTRACT_PASSWORD });
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${login.tokens.access_token}`);

const account = await call(billing, "GetBillingAccount", {}, metadata);
if (account.balance.currency_code !== "EGP" || typeof account.balance.amount !== "string") fail("balance is not Money");
if (account.status !== "active") fail(`status ${account.status}`);
const ledger = await call(billing, "ListCreditTransactions", { page_size: 10 }, metadata);
if (!Array.isArray(ledger.credit_transactions)) fail("no ledger page");
for (const row of ledger.credit_transactions) {
  if (!/^-?[0-9]+\.[0-9]+$/.test(row.amount.amount)) fail(`amount ${row.amount.amount} is not a decimal string`);
}
await call(billing, "ListPlans", {}, metadata);
const usage = await call(billing, "GetUsage", {}, metadata);
const items = usage.items.map((i) => i.item).sort();
if (items.join(",") !== "command,device_month,million_readings,storage_gb_month") fail(`items ${items}`);

const isolation = await code(billing, "GetBillingAccount", { client_id: env.LIFEBOX_CONTRACT_OTHER_CLIENT_ID }, metadata);
if (isolation !== grpc.status.NOT_FOUND) fail(`expected NOT_FOUND, got ${isolation}`);
const staffOnly = await code(billing, "CreatePlan", { plan: { code: "mine", name: "Mine" } }, metadata);
if (staffOnly !== grpc.status.PERMISSION_DENIED) fail(`expected PERMISSION_DENIED, got ${staffOnly}`);
const badAmount = await code(billing, "CreateFawryPayment", { amount: { currency_code: "EGP", amount: "1e3" } }, metadata);
if (badAmount !== grpc.status.INVALID_ARGUMENT) fail(`expected INVALID_ARGUMENT, got ${badAmount}`);

// Card payments (issue 16): the return URL is checked before Fawry is asked; a period of
// nobody's reads NOT_FOUND before any permission; saved cards are Fawry's word (this server
// has no merchant account: FAILED_PRECONDITION).
const badReturn = await code(billing, "CreateFawryCardCheckout", { amount: { currency_code: "EGP", amount: "10.00" }, return_url: "http://evil.example/" }, metadata);
if (badReturn !== grpc.status.INVALID_ARGUMENT) fail(`expected INVALID_ARGUMENT, got ${badReturn}`);
const voidOther = await code(billing, "VoidPostpaidPeriod", { id: "00000000-0000-4000-8000-000000000000", reason: "x" }, metadata);
if (voidOther !== grpc.status.NOT_FOUND) fail(`expected NOT_FOUND, got ${voidOther}`);
const cards = await code(billing, "ListFawryCards", {}, metadata);
if (cards !== grpc.status.FAILED_PRECONDITION) fail(`expected FAILED_PRECONDITION, got ${cards}`);

console.log(JSON.stringify({ ok: true, balance: account.balance, transactions: ledger.credit_transactions.length, isolation, staffOnly, badReturn, voidOther, cards }));
auth.close();
billing.close();
