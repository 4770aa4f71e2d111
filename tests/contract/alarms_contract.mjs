// Contract test in another language: a Node.js client built only from the .proto files
// (@grpc/grpc-js + @grpc/proto-loader) creates an alarm rule (and meets the CEL checker),
// tries it on stored readings, lists and acknowledges an event, and meets tenant isolation.
//
// Usage: node alarms_contract.mjs <host:port>   with LIFEBOX_CONTRACT_EMAIL, _PASSWORD,
// _DEVICE_ID, _EVENT_ID, _OTHER_EVENT_ID and _SINCE (RFC 3339) in the environment. Prints one
// JSON line; exits non-zero on any mismatch.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const require = createRequire(path.join(root, "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync(["lifebox/v1/auth.proto", "lifebox/v1/alarms.proto"], {
  includeDirs: [path.join(root, "protos")], keepCase: true, longs: String, enums: String, defaults: true,
});
const api = grpc.loadPackageDefinition(definition).lifebox.v1;
const address = process.argv[2];
const auth = new api.AuthService(address, grpc.credentials.createInsecure());
const alarms = new api.AlarmService(address, grpc.credentials.createInsecure());

function call(client, method, request, metadata = new grpc.Metadata()) {
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

async function codeOf(promise) {
  try {
    await promise;
    return 0;
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
const md = new grpc.Metadata();
md.set("authorization", `Bearer ${login.tokens.access_token}`);

const rule = {
  name: "hot and dry",
  kind: "ALARM_RULE_KIND_EXPRESSION",
  expression: "temperature_c > 30 && humidity_pct < 20",
  severity: "ALARM_SEVERITY_MAJOR",
  device_id: env.LIFEBOX_CONTRACT_DEVICE_ID,
  message_template: "{temperature_c} C",
};
const badCode = await codeOf(call(alarms, "CreateAlarmRule", { rule: { ...rule, expression: "size(x) > 1" } }, md));
if (badCode !== grpc.status.INVALID_ARGUMENT) fail(`a bad expression gave ${badCode}`);

const created = (await call(alarms, "CreateAlarmRule", { rule }, md)).rule;
if (created.scope !== "ALARM_RULE_SCOPE_DEVICE" || !created.enabled) fail(`unexpected rule ${JSON.stringify(created)}`);
const got = (await call(alarms, "GetAlarmRule", { rule_id: created.id }, md)).rule;
if (got.expression !== rule.expression) fail("GetAlarmRule differs");
const listed = await call(alarms, "ListAlarmRules", { device_id: env.LIFEBOX_CONTRACT_DEVICE_ID }, md);

const since = { seconds: String(Math.floor(Date.parse(env.LIFEBOX_CONTRACT_SINCE) / 1000)), nanos: 0 };
const tried = await call(alarms, "TestAlarmRule", { rule, device_id: env.LIFEBOX_CONTRACT_DEVICE_ID, start_time: since }, md);

const events = await call(alarms, "ListAlarmEvents", { device_id: env.LIFEBOX_CONTRACT_DEVICE_ID }, md);
const acked = (await call(alarms, "AcknowledgeAlarm", { event_id: env.LIFEBOX_CONTRACT_EVENT_ID, note: "from node" }, md)).event;
const detail = await call(alarms, "GetAlarmEvent", { event_id: env.LIFEBOX_CONTRACT_EVENT_ID }, md);
const isolation = await codeOf(call(alarms, "GetAlarmEvent", { event_id: env.LIFEBOX_CONTRACT_OTHER_EVENT_ID }, md));

// --- alarm-reactions (issue 15) ---
// Reactions are saved with their rule; the webhook secret comes once, in the create reply.
const reacting = await call(alarms, "CreateAlarmRule", {
  rule: {
    ...rule,
    name: "hot and dry, reacting",
    reactions: [
      { kind: "ALARM_REACTION_KIND_WEBHOOK", timing: "ALARM_REACTION_TIMING_ON_RAISE", webhook_url: "https://hooks.example.com/lifebox" },
      { kind: "ALARM_REACTION_KIND_NOTIFY", timing: "ALARM_REACTION_TIMING_ON_RAISE_AND_CLEAR" },
    ],
  },
}, md);
if (!/^[0-9a-f]{64}$/.test(reacting.webhook_secret)) fail("no webhook secret in the create reply");
const reread = (await call(alarms, "GetAlarmRule", { rule_id: reacting.rule.id }, md)).rule;
if (JSON.stringify(reread).includes(reacting.webhook_secret)) fail("GetAlarmRule shows the webhook secret");
const badReaction = await codeOf(call(alarms, "CreateAlarmRule", {
  rule: { ...rule, reactions: [{ kind: "ALARM_REACTION_KIND_WEBHOOK", timing: "ALARM_REACTION_TIMING_ON_RAISE", webhook_url: "ftp://x" }] },
}, md));
const reactions = {
  kinds: reread.reactions.map((r) => `${r.kind}/${r.timing}`),
  bad: badReaction,
  outcomes: detail.reaction_outcomes.length,
};
// --- end alarm-reactions ---

console.log(JSON.stringify({
  ok: true,
  bad: badCode,
  rules: listed.rules.map((r) => r.name),
  tested: tried.events.map((e) => e.message),
  evaluated: Number(tried.readings_evaluated),
  events: events.events.map((e) => e.id),
  acked: acked.status,
  notes: detail.acknowledgments.map((a) => a.note),
  isolation,
  reactions, // --- alarm-reactions (issue 15)
}));
