// A gRPC client that is not grpc's C core: @grpc/grpc-js, on Node's own HTTP/2 (nghttp2), calling a tollgate engine.
// Usage: node grpc_js_client.mjs PORT PROTOS_DIR MODEL SLOW_MODEL (one whose first token takes seconds). Prints one
// JSON object: what each call got.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [port, protos, model, slow] = process.argv.slice(2);
const definition = loader.loadSync("tollgate/gateway/v1/gateway.proto", {
  includeDirs: [protos], keepCase: true, longs: String, enums: String, defaults: false,
});
const v1 = grpc.loadPackageDefinition(definition).tollgate.gateway.v1;
const client = new v1.GatewayService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
const deadline = (seconds) => new Date(Date.now() + seconds * 1000);
const params = (content, extra = {}) => ({ model, messages: [{ role: "ROLE_USER", content }], ...extra });
const done = (error, response, status) =>
  ({ code: error ? error.code : 0, details: error ? error.details : "", response, trailing: status.metadata.getMap() });

function unary(method, request, metadata = new grpc.Metadata(), seconds = 10) {
  return new Promise((resolve) => {
    let error = null;
    let response = null;
    const call = client[method](request, metadata, { deadline: deadline(seconds) }, (e, r) => { error = e; response = r; });
    call.on("status", (status) => setImmediate(() => resolve(done(error, response, status))));
  });
}

function stream(request, metadata = new grpc.Metadata(), seconds = 10) {
  return new Promise((resolve) => {
    const got = { chunks: 0, text: "", initial: null, code: null, details: "" };
    const call = client.StreamChatCompletion(request, metadata, { deadline: deadline(seconds) });
    call.on("metadata", (m) => { got.initial = m.getMap(); });
    call.on("data", (chunk) => {
      got.chunks += 1;
      for (const choice of chunk.choices || []) got.text += (choice.delta && choice.delta.content) || "";
    });
    call.on("error", (error) => { got.code = error.code; got.details = error.details; });
    call.on("status", (status) => { if (got.code === null) got.code = status.code; });
    call.on("end", () => setTimeout(() => resolve(got), 10));
  });
}

function raw(path, bytes) {  // a method of another service, with hand-made bytes (grpc.health.v1 has no client here)
  return new Promise((resolve) => {
    client.makeUnaryRequest(path, (b) => b, (b) => b, Buffer.from(bytes), new grpc.Metadata(),
      { deadline: deadline(10) }, (error, response) =>
        resolve({ code: error ? error.code : 0, bytes: response ? [...response] : null }));
  });
}

const tagged = new grpc.Metadata();
tagged.set("x-request-id", "js-client-1");
const result = {};
result.models = await unary("ListModels", {});
result.chat = await unary("CreateChatCompletion", { params: params("hello from node") }, tagged);
result.stream = await stream({ params: params("stream to node") }, tagged);
result.invalid = await unary("CreateChatCompletion", { params: params("hi", { temperature: 5 }) });
result.big = await unary("CreateChatCompletion", { params: params("x".repeat(6 * 1024 * 1024)) });
result.unknown = await raw("/tollgate.gateway.v1.GatewayService/Nope", []);
result.health = await raw("/grpc.health.v1.Health/Check", []);
result.many = await Promise.all(Array.from({ length: 50 }, (_, n) => stream({ params: params(`many ${n}`) })));
result.expired = await stream({ params: { ...params("too late"), model: slow } }, new grpc.Metadata(), 0.5);
client.close();
console.log(JSON.stringify(result, (key, value) => (value instanceof Map ? Object.fromEntries(value) : value)));
