// A stdio MCP server whose one tool, `env`, answers with the names of the environment variables
// it was started with (and `PATH`'s value), for the gateway's downstream-environment test.
import { mcpHandler, serveStdio, text } from "./stdio_server.mjs";

serveStdio(
  mcpHandler({
    name: "env",
    tools: [{ name: "env", inputSchema: { type: "object", properties: {} } }],
    call: (_msg, { reply }) =>
      reply({
        ...text("env"),
        structuredContent: { names: Object.keys(process.env).sort(), path: process.env.PATH ?? null },
      }),
  }),
);
