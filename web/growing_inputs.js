// DreamO for ComfyUI: numbered input sockets that grow as they are connected.
// A node listed in GROWING_INPUTS shows its inputs <prefix>1, <prefix>2, ... only up to one free socket after
// the last connected one; disconnecting hides the trailing empty sockets again. Sockets are never renumbered or
// compacted: a reference connected to ref_3 stays in ref_3 (its slot, [ref#3]) whatever happens to ref_1 and ref_2.
// Hidden sockets are removed from the node, not kept in a hidden state, so a saved workflow lists only inputs the
// node really has; ComfyUI's frontend puts any missing ones back (in the node's own order) when it loads the
// workflow without this extension, and the API prompt is the same either way (unconnected inputs are not in it).
import { app } from "../../scripts/app.js";
import { APPLY_NODE, ROUTING_NODE, TEXT_NODE } from "./node_ids.js";

// Node id -> prefix of its growing inputs. Another node opts in with one entry (e.g. regions: "region_").
export const GROWING_INPUTS = {
  [APPLY_NODE]: "ref_",
  [TEXT_NODE]: "ref_",
  [ROUTING_NODE]: "region_",
};

export function slotNumber(name, prefix) {
  if (typeof name !== "string" || !name.startsWith(prefix)) return null;
  const rest = name.slice(prefix.length);
  return /^[1-9]\d*$/.test(rest) ? Number(rest) : null;
}

/** The link with id `id` of `graph` (a Map in newer frontends, an object in older ones), or undefined. */
export function getLink(graph, id) {
  if (!graph || id == null) return undefined;
  const links = graph.links ?? graph._links;
  return typeof links?.get === "function" ? links.get(id) : links?.[id];
}

/** The slots of `prefix` inputs that have a link, ascending. */
export function connectedSlots(node, prefix) {
  const slots = [];
  for (const input of node.inputs ?? []) {
    const k = slotNumber(input.name, prefix);
    if (k !== null && input.link != null) slots.push(k);
  }
  return slots.sort((a, b) => a - b);
}

function fixTargetSlots(node) {
  node.inputs.forEach((input, i) => {
    const link = getLink(node.graph, input.link);
    if (link) link.target_slot = i;
  });
}

/** Show <prefix>1 .. <prefix>(last connected + 1), in the node's own input order; hide the rest. */
export function syncGrowingInputs(node, spec) {
  if (!node.inputs) return false;
  const { prefix, max, order, templates } = spec;
  const last = Math.max(0, ...connectedSlots(node, prefix));
  const want = Math.min(max, last + 1);
  const before = node.computeSize?.()[1];
  let changed = false;
  for (let i = node.inputs.length - 1; i >= 0; i--) {
    const k = slotNumber(node.inputs[i].name, prefix);
    if (k !== null && k > want && node.inputs[i].link == null) {
      node.removeInput(i);
      changed = true;
    }
  }
  for (let k = 1; k <= want; k++) {
    const name = `${prefix}${k}`;
    if (node.inputs.some((input) => input.name === name)) continue;
    const template = templates.get(name);
    if (!template) continue;
    node.addInput(name, template.type, { ...template.extra });
    changed = true;
  }
  // addInput appends: put every input back at its place in the node definition (unknown ones stay last).
  const rank = (name) => (order.has(name) ? order.get(name) : Number.MAX_SAFE_INTEGER);
  const sorted = node.inputs
    .map((input, i) => [input, i])
    .sort((a, b) => rank(a[0].name) - rank(b[0].name) || a[1] - b[1])
    .map(([input]) => input);
  if (sorted.some((input, i) => input !== node.inputs[i])) {
    node.inputs.splice(0, node.inputs.length, ...sorted);
    changed = true;
  }
  if (changed) {
    fixTargetSlots(node);
    const after = node.computeSize?.()[1];
    if (before != null && after != null && node.size) {
      // Keep any height the user added; only the sockets' rows come and go.
      node.setSize?.([node.size[0], Math.max(after, node.size[1] + after - before)]);
    }
    node.setDirtyCanvas?.(true, true);
    node.graph?.setDirtyCanvas?.(true, true);
  }
  return changed;
}

function specFromNode(node, prefix) {
  // Called on a freshly constructed node: its inputs are the node definition's, in order.
  const order = new Map();
  const templates = new Map();
  (node.inputs ?? []).forEach((input, i) => {
    order.set(input.name, i);
    if (slotNumber(input.name, prefix) !== null) {
      const extra = {};
      for (const key of ["shape", "localized_name", "label", "tooltip", "color_on", "color_off"]) {
        if (input[key] != null) extra[key] = input[key];
      }
      templates.set(input.name, { type: input.type, extra });
    }
  });
  return { prefix, max: templates.size, order, templates };
}

function schedule(node) {
  if (node.__dreamoGrowQueued) return;
  node.__dreamoGrowQueued = true;
  // After the current task: a link dragged onto a taken socket is disconnected then connected, and a workflow
  // being loaded connects its inputs after creating the node; decide once the graph has settled.
  queueMicrotask(() => {
    node.__dreamoGrowQueued = false;
    const spec = node.constructor.__dreamoGrowSpec;
    if (spec) syncGrowingInputs(node, spec);
  });
}

app.registerExtension({
  name: "DreamO.GrowingInputs",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const prefix = GROWING_INPUTS[nodeData?.name];
    if (!prefix) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      if (!this.constructor.__dreamoGrowSpec) {
        const spec = specFromNode(this, prefix);
        if (spec.max > 0) this.constructor.__dreamoGrowSpec = spec;
      }
      schedule(this);
      return r;
    };

    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function (type, index, connected, linkInfo, ioSlot) {
      const r = onConnectionsChange?.apply(this, arguments);
      if (type === LiteGraph.INPUT && slotNumber(ioSlot?.name ?? this.inputs?.[index]?.name, prefix) !== null) {
        schedule(this);
      }
      return r;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      schedule(this);
      return r;
    };
  },
});
