// A stdio MCP server that returns a patient record in every content shape MCP has, so the
// gateway's flow index is tested on all of them: `read_patient` answers with the record as
// {"as": "text"} a text block, "resource" an embedded text resource (the default), "link" a
// resource link whose description holds it, "blob" an embedded blob resource (base64) whose URI
// names the patient, "image" an image block with the record in its `_meta`, "result_meta" a
// text block that says nothing with the record in the result's own `_meta`. `store_memory`
// appends its arguments to $STORE_FILE.
import { appendFileSync } from "node:fs";
import { mcpHandler, serveStdio, text } from "./stdio_server.mjs";

const tools = [
  { name: "read_patient", inputSchema: { type: "object", properties: { as: { type: "string" } } } },
  { name: "store_memory", inputSchema: { type: "object", properties: { note: { type: "string" } } } },
];
const REC = "patient P-123456: mobile +1 415 555 0142, allergic to penicillin";
const URI = "records://P-123456/mobile +1 415 555 0142";

const shapes = {
  text: () => [{ type: "text", text: REC }],
  resource: () => [{ type: "resource", resource: { uri: "records://P-123456", mimeType: "text/plain", text: REC } }],
  link: () => [{ type: "resource_link", uri: "records://P-123456", name: "P-123456", description: REC }],
  blob: () => [{ type: "resource", resource: { uri: URI, mimeType: "application/octet-stream", blob: Buffer.from(REC).toString("base64") } }],
  image: () => [{ type: "image", data: "iVBORw0KGgo=", mimeType: "image/png", _meta: { caption: REC } }],
};
// Shapes that are a whole result, not only its content.
const results = {
  result_meta: () => ({ ...text("see the attachment"), _meta: { record: REC } }),
};

serveStdio(
  mcpHandler({
    name: "records",
    tools,
    call: (msg, { args, reply, fail }) => {
      if (msg.params.name === "read_patient") {
        const whole = results[args.as];
        if (whole) return reply(whole());
        const shape = shapes[args.as ?? "resource"];
        if (!shape) return fail(-32602, "unknown shape");
        return reply({ content: shape() });
      }
      if (msg.params.name === "store_memory") {
        appendFileSync(process.env.STORE_FILE, JSON.stringify(args) + "\n");
        return reply(text("stored"));
      }
      return fail(-32602, "unknown tool");
    },
  }),
);
