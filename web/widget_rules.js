// DreamO for ComfyUI: widgets that apply, at a size that reads.
// - Visibility, declared by the Python nodes with their inputs (nodes/widget_rules.py): an input whose options carry
//   `dreamo_shown_if` is shown while one of its conditions holds ([widget, "in" | "not_in", values]); one with
//   `dreamo_follows` while that widget is shown and not 'none'. E.g. the stage loader shows the stages the chosen
//   version and turbo switch use; DreamO Routing shows `strength` in soft mode only. A widget converted to a
//   connected input always shows. Hidden widgets keep their values: saved workflows and API prompts are unchanged.
// - Advanced inputs (`advanced: true`, ComfyUI's own option, e.g. the stage strengths) fold away on the canvas too,
//   through the frontend's own flag and its node menu entry "Show Advanced" (the Vue-nodes view and the properties
//   panel fold them themselves).
// - Default size of a new DreamO node: wide enough for its title and its choices, and a prompt box of a few lines.
import { app } from "../../scripts/app.js";

const SHOWN_IF = "dreamo_shown_if";
const FOLLOWS = "dreamo_follows";
const CATEGORY = "DreamO";
const MAX_WIDTH = 440;
const PROMPT_BOX = 160; // px of text box a new node gets (core's CLIPTextEncode has 154)

function inputOptions(nodeData) {
  const out = new Map();
  for (const group of ["required", "optional"]) {
    for (const [name, spec] of Object.entries(nodeData?.input?.[group] ?? {})) {
      if (Array.isArray(spec) && spec[1] && typeof spec[1] === "object") out.set(name, spec[1]);
    }
  }
  return out;
}

function rulesOf(nodeData) {
  const rules = new Map();
  for (const [name, options] of inputOptions(nodeData)) {
    if (options.advanced) rules.set(name, null); // folded: see applyRules
    if (Array.isArray(options[SHOWN_IF])) rules.set(name, { shownIf: options[SHOWN_IF] });
    else if (typeof options[FOLLOWS] === "string") rules.set(name, { follows: options[FOLLOWS] });
  }
  return rules;
}

function valueOf(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

function linked(node, widget) {
  return node.inputs?.some((i) => (i.widget?.name === widget.name || i.name === widget.name) && i.link != null);
}

/** Hide or show one widget on every frontend: `hidden` (canvas), `options.hidden` (Vue nodes, properties panel),
 *  and no height while hidden (frontend 1.27 still lays out hidden widgets). */
export function setHidden(widget, hidden, canvasOnly = false) {
  widget.hidden = hidden;
  widget.options ??= {};
  if (!canvasOnly) widget.options.hidden = hidden;
  else if (widget.options.hidden) widget.options.hidden = false;
  if (hidden) {
    if (!("dreamoComputeSize" in widget)) {
      widget.dreamoComputeSize = Object.getOwnPropertyDescriptor(widget, "computeSize") ?? null;
    }
    widget.computeSize = () => [0, -4];
  } else if ("dreamoComputeSize" in widget) {
    const own = widget.dreamoComputeSize;
    delete widget.dreamoComputeSize;
    if (own) Object.defineProperty(widget, "computeSize", own);
    else delete widget.computeSize;
  }
}

/** Apply the rules to a node; `fit`: resize the node to its widgets (after the user changed a choice). */
export function applyRules(node, rules, fit = false) {
  let changed = false;
  const show = (w, yes) => {
    const hidden = !(yes || linked(node, w));
    const folded = !hidden && w.advanced && !node.showAdvanced && !linked(node, w);
    if (Boolean(w.hidden) !== (hidden || folded) || Boolean(w.options?.hidden) !== hidden) {
      setHidden(w, hidden || folded, !hidden);
      changed = true;
    }
  };
  for (const w of node.widgets ?? []) {
    const rule = rules.get(w.name);
    if (!rule && w.advanced) show(w, true);
    if (rule?.shownIf) {
      show(w, rule.shownIf.some(([name, op, values]) => {
        const inside = Array.isArray(values) && values.includes(valueOf(node, name));
        return op === "not_in" ? !inside : inside;
      }));
    }
  }
  for (const w of node.widgets ?? []) {
    const rule = rules.get(w.name);
    if (rule?.follows) {
      const target = node.widgets.find((t) => t.name === rule.follows);
      show(w, Boolean(target) && !target.hidden && target.value !== "none");
    }
  }
  if (changed) {
    const size = node.computeSize?.();
    if (size && node.size) node.setSize([node.size[0], fit ? size[1] : Math.max(node.size[1], size[1])]);
    node.setDirtyCanvas?.(true, true);
    node.graph?.setDirtyCanvas?.(true, true);
  }
  return changed;
}

let measure = null;
function textWidth(text, font) {
  measure ??= document.createElement("canvas").getContext("2d");
  measure.font = font;
  return measure.measureText(String(text ?? "")).width;
}

/** The width a new DreamO node needs for its title and the current choice of each combo widget. */
export function defaultWidth(node) {
  const size = LiteGraph.NODE_TEXT_SIZE ?? 14;
  let width = textWidth(node.title ?? node.type, `bold ${size}px sans-serif`) + 80;
  for (const w of node.widgets ?? []) {
    if (w.type !== "combo" || w.hidden) continue;
    width = Math.max(width, textWidth(`${w.label ?? w.name}  ${w.value}`, `${size - 2}px sans-serif`) + 90);
  }
  return Math.min(MAX_WIDTH, Math.ceil(width));
}

function sizeNewNode(node) {
  const width = Math.max(node.size?.[0] ?? 0, defaultWidth(node));
  let height = node.computeSize?.()[1] ?? node.size?.[1] ?? 100;
  const box = node.widgets?.find((w) => w.element instanceof HTMLTextAreaElement);
  if (box) height += Math.max(0, PROMPT_BOX - (box.computeLayoutSize?.(node)?.minHeight ?? 60));
  node.setSize?.([width, Math.max(node.size?.[1] ?? 0, height)]);
}

app.registerExtension({
  name: "DreamO.WidgetRules",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData?.category ?? "").startsWith(CATEGORY)) return;
    const rules = rulesOf(nodeData);

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      if (rules.size) {
        for (const w of this.widgets ?? []) if (w.options?.advanced) w.advanced = true; // the frontend's own flag
        const controls = new Set([...rules.values()].filter(Boolean).flatMap((rule) =>
          rule.shownIf ? rule.shownIf.map(([name]) => name) : [rule.follows]));
        for (const w of this.widgets ?? []) {
          if (!controls.has(w.name)) continue;
          const callback = w.callback;
          const node = this;
          w.callback = function () {
            const out = callback?.apply(this, arguments);
            applyRules(node, rules, true);
            return out;
          };
        }
        applyRules(this, rules, true);
      }
      // Once the frontend has given the new node its size and its sockets have settled (growing_inputs.js); a node
      // loaded from a workflow keeps its saved size.
      setTimeout(() => this.dreamoConfigured || sizeNewNode(this), 0);
      return r;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      this.dreamoConfigured = true;
      if (rules.size) applyRules(this, rules); // the saved values are in: show what they use, keep the saved size
      return r;
    };

    if (!rules.size) return;

    const toggleAdvanced = nodeType.prototype.toggleAdvanced;
    nodeType.prototype.toggleAdvanced = function () {
      const r = toggleAdvanced?.apply(this, arguments);
      applyRules(this, rules, true);
      return r;
    };

    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const r = onConnectionsChange?.apply(this, arguments);
      queueMicrotask(() => applyRules(this, rules));
      return r;
    };
  },
});
