// DreamO for ComfyUI: the pack's node ids as the frontend modules use them, and the graph walks they share.
// The ids come from the Python side (web/node_ids.js).
import { connectedSlots, getLink } from "./growing_inputs.js";
import { APPLY_NODE } from "./node_ids.js";

export { APPLY_NODE, REFERENCE_NODE, REGIONAL_NODE, ROUTING_NODE, TEXT_NODE } from "./node_ids.js";
export const REF_PREFIX = "ref_";

/** The node feeding `node`'s input `name`, or null. */
export function originOf(node, name) {
  const input = node?.inputs?.find((i) => i.name === name);
  const link = input && getLink(node.graph, input.link);
  return link ? node.graph.getNodeById(link.origin_id) ?? null : null;
}

/** {slot: node feeding ref_slot} of a node with ref_k inputs. */
export function referenceOrigins(node) {
  const out = {};
  for (const slot of connectedSlots(node, REF_PREFIX)) out[slot] = originOf(node, `${REF_PREFIX}${slot}`);
  return out;
}

/** The nodes `node`'s outputs of `type` reach, following links downstream up to `depth` nodes deep
 *  (e.g. DreamO Text Encode → FluxGuidance → DreamO Apply). `through(n)` says whether to walk on past node n. */
export function downstream(node, type, depth = 4, through = () => true) {
  const graph = node?.graph;
  const found = [];
  const seen = new Set([node?.id]);
  let frontier = node ? [node] : [];
  for (let d = 0; d < depth && frontier.length; d++) {
    const next = [];
    for (const n of frontier) {
      for (const output of n.outputs ?? []) {
        if (output.type !== type) continue;
        for (const id of output.links ?? []) {
          const link = getLink(graph, id);
          const target = link && graph.getNodeById(link.target_id);
          if (!target || seen.has(target.id)) continue;
          seen.add(target.id);
          found.push({ node: target, input: target.inputs?.[link.target_slot]?.name });
          if (through(target)) next.push(target);
        }
      }
    }
    frontier = next;
  }
  return found;
}

/** The nodes upstream of `node` through its inputs of `type` (e.g. MODEL), nearest first. */
export function upstream(node, type, depth = 6) {
  const found = [];
  const seen = new Set([node?.id]);
  let current = node;
  for (let d = 0; d < depth && current; d++) {
    const input = current.inputs?.find((i) => i.type === type && i.link != null);
    const link = input && getLink(current.graph, input.link);
    const origin = link && current.graph.getNodeById(link.origin_id);
    if (!origin || seen.has(origin.id)) break;
    seen.add(origin.id);
    found.push(origin);
    current = origin;
  }
  return found;
}

/** The DreamO Apply nodes whose `positive` a DreamO Text Encode's conditioning reaches (through FluxGuidance,
 *  conditioning combine nodes, ...; not through another DreamO Apply). */
export function appliesOfText(textNode) {
  return downstream(textNode, "CONDITIONING", 5, (n) => n.type !== APPLY_NODE)
    .filter(({ node, input }) => node.type === APPLY_NODE && input === "positive")
    .map(({ node }) => node);
}

/** The slots with a reference on the DreamO Apply nodes of a model chain through `node` (a DreamO Routing):
 *  null when no DreamO Apply is found on it. */
export function modelChainSlots(node) {
  const chain = [...upstream(node, "MODEL"), ...downstream(node, "MODEL", 4).map(({ node: n }) => n)];
  const applies = chain.filter((n) => n.type === APPLY_NODE);
  if (!applies.length) return null;
  const slots = new Set();
  for (const a of applies) for (const k of connectedSlots(a, REF_PREFIX)) slots.add(k);
  return [...slots].sort((a, b) => a - b);
}

/** A fingerprint of everything upstream of `node` that decides what it computes (node types, widget values and
 *  links), to tell when a shown result is out of date. */
export function upstreamSignature(node, depth = 8) {
  const parts = [];
  const seen = new Set();
  const visit = (n, d) => {
    if (!n || seen.has(n.id) || d > depth) return;
    seen.add(n.id);
    const values = (n.widgets ?? []).filter((w) => w.serialize !== false && w.options?.serialize !== false)
      .filter((w) => w.name !== "control_after_generate")
      .map((w) => [w.name, typeof w.value === "object" ? null : w.value]);
    const links = (n.inputs ?? []).map((i) => {
      const l = getLink(n.graph, i.link);
      return l ? [i.name, l.origin_id, l.origin_slot] : null;
    });
    parts.push([n.id, n.type, n.mode ?? 0, values, links]);
    for (const i of n.inputs ?? []) {
      const l = getLink(n.graph, i.link);
      if (l) visit(n.graph.getNodeById(l.origin_id), d + 1);
    }
  };
  visit(node, 0);
  return JSON.stringify(parts);
}

const SAMPLER_LATENT_INPUTS = ["latent_image", "latent", "samples"];

function widgetValue(node, name) {
  const v = node?.widgets?.find((w) => w.name === name)?.value;
  return typeof v === "number" && v > 0 ? v : null;
}

/** [width, height, title] of the latent the nearest sampler downstream of `node` starts from (a node with a
 *  LATENT input fed by a node with width and height widgets), or null. */
export function downstreamLatentSize(node) {
  const graph = node.graph;
  if (!graph) return null;
  const seen = new Set([node.id]);
  let frontier = [node];
  for (let depth = 0; depth < 6 && frontier.length; depth++) {
    const next = [];
    for (const n of frontier) {
      for (const output of n.outputs ?? []) { // MODEL, and e.g. GUIDER on to SamplerCustomAdvanced
        for (const id of output.links ?? []) {
          const link = getLink(graph, id);
          const target = link && graph.getNodeById(link.target_id);
          if (!target || seen.has(target.id)) continue;
          seen.add(target.id);
          const latentInput = target.inputs?.find((i) => SAMPLER_LATENT_INPUTS.includes(i.name) && i.type === "LATENT");
          const origin = latentInput && graph.getNodeById(getLink(graph, latentInput.link)?.origin_id);
          const w = widgetValue(origin, "width"), h = widgetValue(origin, "height");
          if (w && h) return [w, h, origin.title ?? origin.type];
          next.push(target);
        }
      }
    }
    frontier = next;
  }
  return null;
}
