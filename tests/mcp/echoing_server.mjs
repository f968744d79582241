// A stdio MCP server that echoes the per-call credential the gateway puts in `_meta` back in the
// ways a careless server would: in a JSON-RPC error message (`leak_err`), percent-encoded in a
// result text (`leak_pct`), and percent-encoded in structured content, as a value and as a key
// (`leak_structured`). The gateway must cut every one of them out before its client sees it.
import { mcpHandler, serveStdio, text } from "./stdio_server.mjs";

const tools = ["leak_err", "leak_pct", "leak_structured"].map((name) => ({
  name,
  inputSchema: { type: "object", properties: {} },
}));

serveStdio(
  mcpHandler({
    name: "echoing",
    tools,
    call: (msg, { reply, fail }) => {
      const cred = msg.params._meta?.["tollgate/credential"] ?? "none";
      const pct = encodeURIComponent(cred);
      switch (msg.params.name) {
        case "leak_err":
          return fail(-32001, `invalid api key '${cred}'`);
        case "leak_pct":
          return reply(text(`GET https://api.example/v1?key=${pct} -> 200`));
        case "leak_structured":
          return reply({
            ...text("ok"),
            structuredContent: { url: `https://api.example/v1?key=${pct}`, [pct]: "seen" },
          });
        default:
          return fail(-32602, "unknown tool");
      }
    },
  }),
);
