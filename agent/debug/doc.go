// Package debug serves the agent's node-level debugging API: the flows in
// OVS that realize a policy (GET /debug/flows) and a packet's walk through
// the pipeline, traced by OVS itself (GET /debug/trace). palisadectl's
// `get flows` and `trace` commands are its clients.
package debug
