// Contract test in another language (issue 17): a Node.js client built only from the .proto
// files creates a quick-view page with a device, adds a TABLE widget, is refused a gauge on a
// boolean field with the field path, reads the page's data in one call (column-shaped like
// TelemetryService), meets ABORTED for a stale etag, and deletes the page.
//
// Usage: node dashboards_contract.mjs <host:port>   with LIFEBOX_CONTRACT_EMAIL, _PASSWORD and
// _DEVICE_ID (a device with a reading in the last hour) in the environment. Prints one JSON
// line; exits non-zero on any mismatch.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const require = createRequire(path.join(root, "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync(
  ["lifebox/v1/auth.proto", "lifebox/v1/dashboards.proto"],
  { includeDirs: [path.join(root, "protos")], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const api = grpc.loadPackageDefinition(definition).lifebox.v1;
const address = process.argv[2];
const auth = new api.AuthService(address, grpc.credentials.createInsecure());
const dashboards = new api.DashboardService(address, grpc.credentials.createInsecure());

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

async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    return { code: error.code, details: error.details };
  }
  return { code: grpc.status.OK, details: "" };
}

const env = process.env;
const login = await call(auth, "Login", { email: env.LIFEBOX_CONTRACT_EMAIL, password: env.LIFEBOX_CONTRACT_PASSWORD });
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${login.tokens.access_token}`);
const device_id = env.LIFEBOX_CONTRACT_DEVICE_ID;
const position = { x: 0, y: 0, width: 4, height: 3 };

const { page } = await call(dashboards, "CreatePage", { page: { title: "Node page", device_ids: [device_id] } }, metadata);
if (page.device_ids[0] !== device_id) fail("the page lost its device");
const { widget } = await call(
  dashboards,
  "CreateWidget",
  { widget: { page_id: page.id, type: "WIDGET_TYPE_TABLE", title: "Volts", table: { device_ids: [device_id], fields: ["voltage_l1"] }, position } },
  metadata,
);
const bad = await failure(
  call(
    dashboards,
    "CreateWidget",
    { widget: { page_id: page.id, type: "WIDGET_TYPE_GAUGE", gauge: { device_id, field: "relay_on", min: 0, max: 1 }, position } },
    metadata,
  ),
);
const now = Math.floor(Date.now() / 1000);
const data = await call(
  dashboards,
  "GetPageData",
  { page_id: page.id, start_time: { seconds: String(now - 3600) }, end_time: { seconds: String(now + 60) } },
  metadata,
);
const table = data.widgets.find((w) => w.widget_id === widget.id);
if (!table || table.data !== "latest") fail("no table data");
const renamed = await call(
  dashboards,
  "UpdatePage",
  { page: { id: page.id, title: "Renamed", etag: page.etag }, update_mask: { paths: ["title"] } },
  metadata,
);
const stale = await failure(
  call(dashboards, "UpdatePage", { page: { id: page.id, title: "Lost", etag: page.etag }, update_mask: { paths: ["title"] } }, metadata),
);
await call(dashboards, "DeletePage", { page_id: page.id, etag: renamed.page.etag }, metadata);
const gone = await failure(call(dashboards, "GetPage", { page_id: page.id }, metadata));
console.log(
  JSON.stringify({
    ok: true,
    page: page.id,
    bad: bad.code === grpc.status.INVALID_ARGUMENT ? bad.details : null,
    latest_devices: table.latest.device_ids,
    column: { field: table.latest.columns[0].field, type: table.latest.columns[0].type, doubles: table.latest.columns[0].doubles },
    renamed: renamed.page.title,
    stale: stale.code,
    gone: gone.code,
  }),
);
