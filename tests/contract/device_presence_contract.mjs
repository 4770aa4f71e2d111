// Contract test in another language (issue 13): a Node.js client built only from the .proto
// files follows a device's presence: StreamDeviceEvents (its first message says the stream
// is live), then GetDevice's presence, ListDevices by presence state, and the paged history.
//
// Usage: node device_presence_contract.mjs <host:port>   with LIFEBOX_CONTRACT_EMAIL,
// _PASSWORD and _DEVICE_ID in the environment. Prints {"live": true} once the stream is live
// (the test then changes the device's presence twice: online, then offline clean), then one
// JSON report line; exits non-zero on any mismatch.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const require = createRequire(path.join(root, "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync(
  ["lifebox/v1/auth.proto", "lifebox/v1/devices.proto"],
  { includeDirs: [path.join(root, "protos")], keepCase: true, longs: String, enums: String, defaults: true },
);
const api = grpc.loadPackageDefinition(definition).lifebox.v1;
const address = process.argv[2];
const auth = new api.AuthService(address, grpc.credentials.createInsecure());
const devices = new api.DeviceService(address, grpc.credentials.createInsecure());

function call(client, method, request, metadata = new grpc.Metadata()) {
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

function fail(message) {
  console.log(JSON.stringify({ ok: false, message }));
  process.exit(1);
}

const env = process.env;
const login = await call(auth, "Login", {
  email: env.LIFEBOX_CONTRACT_EMAIL,
  password: env.LIFEBOX_CONTRACT_PASSWORD,
});
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${login.tokens.access_token}`);
const device_id = env.LIFEBOX_CONTRACT_DEVICE_ID;

// Two events after the live marker, within 30 s.
const events = await new Promise((resolve, reject) => {
  const stream = devices.StreamDeviceEvents({ device_ids: [device_id] }, metadata);
  const got = [];
  const timer = setTimeout(() => reject(new Error(`only ${got.length} events`)), 30_000);
  let live = false;
  stream.on("data", (reply) => {
    if (!live) {
      if (reply.event) fail("the first message carries an event");
      live = true;
      console.log(JSON.stringify({ live: true }));
      return;
    }
    got.push(reply.event);
    if (got.length === 2) {
      clearTimeout(timer);
      stream.cancel();
      resolve(got);
    }
  });
  stream.on("error", (error) => {
    if (error.code !== grpc.status.CANCELLED) reject(error);
  });
});
const states = events.map((e) => `${e.state}/${e.cause}/${e.session}`);
if (events.some((e) => e.device_id !== device_id)) fail("an event of another device");

const device = (await call(devices, "GetDevice", { id: device_id }, metadata)).device;
if (device.online) fail("online after a clean disconnect");
if (device.presence.state !== "PRESENCE_STATE_OFFLINE") fail(`state ${device.presence.state}`);

const offline = await call(
  devices, "ListDevices", { presence_state: "PRESENCE_STATE_OFFLINE", page_size: 500 }, metadata,
);
if (!offline.devices.some((d) => d.id === device_id)) fail("not listed as offline");

const history = [];
let page_token = "";
do {
  const page = await call(devices, "ListDeviceConnections", { device_id, page_size: 1, page_token }, metadata);
  history.push(...page.events.map((e) => `${e.state}/${e.cause}/${e.session}`));
  page_token = page.next_page_token;
} while (page_token);

console.log(JSON.stringify({ ok: true, streamed: states, history, session: device.presence.session }));
auth.close();
devices.close();
