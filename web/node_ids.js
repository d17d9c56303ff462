// DreamO for ComfyUI: the pack's node ids, by role, as the Python side names them (GET /dreamo/node_ids, served by
// nodes/node_ids_route.py from the node classes). No other file in web/ names a node: they import the ids here.
// Read once with a top-level await: ComfyUI's frontend awaits every extension module before it registers the node
// definitions, so the ids are known before any `beforeRegisterNodeDef` runs.
import { api } from "../../scripts/api.js";

const ROUTE = "/dreamo/node_ids";
const ROLES = ["reference", "apply", "text", "routing", "regional"];

async function load() {
  const res = await api.fetchApi(ROUTE, { cache: "no-store" });
  if (!res.ok) throw new Error(`DreamO: ${ROUTE} answered ${res.status}; is the DreamO node pack loaded?`);
  const ids = await res.json();
  const missing = ROLES.filter((role) => typeof ids?.[role] !== "string");
  if (missing.length) throw new Error(`DreamO: ${ROUTE} names no node for ${missing.join(", ")}`);
  return Object.freeze(ids);
}

export const NODE_IDS = await load();
export const REFERENCE_NODE = NODE_IDS.reference;
export const APPLY_NODE = NODE_IDS.apply;
export const TEXT_NODE = NODE_IDS.text;
export const ROUTING_NODE = NODE_IDS.routing;
export const REGIONAL_NODE = NODE_IDS.regional;
