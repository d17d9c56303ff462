// DreamO for ComfyUI: the region editor of DreamO Routing.
// One rectangle per reference slot, drawn, moved and resized with the mouse over a preview of the output size,
// in the slot colours of DreamO Routing Map's legend (read from the node definition: the `dreamo_slot_colours`
// option of the drawn_regions input, so Python is their one source).
// - The rectangles are stored in the node's own optional STRING input `drawn_regions` as JSON (region_format.js),
//   {"width": W, "height": H, "boxes": {"1": [x, y, w, h], ...}} in pixels of the W×H preview, with each region's
//   words (regional prompts, typed in region_text.js's field) under "texts": {"1": "..."}; the node turns them
//   into masks (dreamo_ops/drawn_regions.py). Without this extension that input is a plain text field that still
//   works; the API takes the same text. This editor only hides that text field and draws the editor instead: the
//   editor widget itself is never saved nor queued.
// - The preview size is the width/height of the latent the sampler downstream of the node starts from (an
//   EmptySD3LatentImage, EmptyLatentImage, ...), else the size stored in the text, else 1024×1024.
// - A connected region_k mask wins over the box drawn for slot k: the editor draws that box dashed and says so.
// - Slot buttons pick the slot being drawn (a dot marks the slots DreamO Apply has a reference in); "clear" removes
//   its box. Drag on empty space: a new box for the chosen slot; drag inside a box: move it (and choose its slot);
//   drag a corner of the chosen slot's box: resize. While the chosen slot has no box, a drag draws it anywhere, over
//   other boxes too (a click on a box chooses its slot).
// - Each drawing of the editor (the canvas, the Vue-nodes view, the properties panel) has its own size and place:
//   a mouse event is read in the geometry of the drawing it happened on.
import { app } from "../../scripts/app.js";
import { connectedSlots } from "./growing_inputs.js";
import { ROUTING_NODE as NODE, downstreamLatentSize, modelChainSlots } from "./dreamo_nodes.js";
import { formatRegions, formatTexts, parseRegions, regionLabel } from "./region_format.js";

const TEXT_WIDGET = "drawn_regions";
const EDITOR_WIDGET = "dreamo_region_editor";
const COLOUR_OPTION = "dreamo_slot_colours";
const DEFAULT_SIZE = [1024, 1024];
const EDITOR_HEIGHT = 260;
const TOOLBAR = 22;
const FOOTER = 16;
const MARGIN = 10;
const HANDLE = 7;
const MIN_DRAG = 3; // canvas pixels: a click is not a box

function hexToRgba(hex, alpha) {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex ?? "");
  if (!m) return `rgba(200,200,200,${alpha})`;
  return `rgba(${parseInt(m[1], 16)},${parseInt(m[2], 16)},${parseInt(m[3], 16)},${alpha})`;
}

class RegionEditor {
  constructor(node, textWidget, colours) {
    this.node = node;
    this.text = textWidget;
    this.colours = colours; // {"1": "#e6194b", ...}
    this.slots = Object.keys(colours).map(Number).sort((a, b) => a - b);
    this.active = this.slots[0] ?? 1;
    this.drag = null;
    this.top = 0; // the widget's y in the node (set on every draw)
    this.width = node.size?.[0] ?? 300;
    this.surfaces = new WeakMap(); // drawing surface (a canvas element) -> its {top, width}
    this.parsedText = null;
    this.parsed = null;
  }

  /** The stored regions (parsed once per text). */
  get stored() {
    const text = String(this.text.value ?? "");
    if (text !== this.parsedText) {
      this.parsedText = text;
      this.parsed = parseRegions(text);
    }
    return this.parsed;
  }

  /** [width, height, where from] of the preview. */
  previewSize() {
    const latent = downstreamLatentSize(this.node);
    if (latent) return latent;
    const s = this.stored;
    if (s?.width && s?.height) return [s.width, s.height, "drawn_regions"];
    return [...DEFAULT_SIZE, "default"];
  }

  /** The boxes in preview pixels ({slot: [x, y, w, h]}), rescaled when stored for another size. */
  boxes() {
    const s = this.stored;
    if (!s) return {};
    const [pw, ph] = this.previewSize();
    const fx = s.width ? pw / s.width : 1, fy = s.height ? ph / s.height : 1;
    const out = {};
    for (const [k, [x, y, w, h]] of Object.entries(s.boxes)) out[k] = [x * fx, y * fy, w * fx, h * fy];
    return out;
  }

  /** Each region's words as stored ({slot: words}). */
  texts() {
    return { ...(this.stored?.texts ?? {}) };
  }

  setBoxes(boxes, texts = this.texts()) {
    const [pw, ph] = this.previewSize();
    const clean = {};
    for (const [k, box] of Object.entries(boxes)) {
      let [x, y, w, h] = box.map((v) => Math.round(v));
      x = Math.max(0, Math.min(pw - 1, x));
      y = Math.max(0, Math.min(ph - 1, y));
      w = Math.max(1, Math.min(pw - x, w));
      h = Math.max(1, Math.min(ph - y, h));
      clean[k] = [x, y, w, h];
    }
    const value = Object.keys(clean).length || formatTexts(texts) ? formatRegions(pw, ph, clean, texts) : "";
    if (value === this.text.value) return;
    const old = this.text.value;
    this.text.value = value;
    this.text.callback?.(value, app.canvas, this.node);
    this.node.onWidgetChanged?.(this.text.name, value, old, this.text);
    this.node.graph?.change?.();
    this.redraw();
  }

  /** Draw again: the canvas, and the editor's own canvas where the Vue-nodes view hosts it (WidgetLegacy). */
  redraw() {
    this.node.setDirtyCanvas?.(true, true);
    this.node.widgets?.find((w) => w.name === EDITOR_WIDGET)?.triggerDraw?.();
  }

  /** Slots whose region_k mask is connected (the mask wins over the drawn box). */
  maskSlots() {
    return new Set(connectedSlots(this.node, "region_"));
  }

  // --- geometry (widget-local coordinates: x from the node's left edge, y from the widget's top) -----------

  previewRect() {
    const [pw, ph] = this.previewSize();
    const aw = Math.max(20, this.width - 2 * MARGIN);
    const ah = EDITOR_HEIGHT - TOOLBAR - FOOTER - 8;
    const scale = Math.min(aw / pw, ah / ph);
    const w = pw * scale, h = ph * scale;
    return { x: MARGIN + (aw - w) / 2, y: TOOLBAR + 4, w, h, scale };
  }

  /** Preview pixel → widget-local point. */
  toLocal(px, py) {
    const r = this.previewRect();
    return [r.x + px * r.scale, r.y + py * r.scale];
  }

  toPreview(lx, ly) {
    const r = this.previewRect();
    return [(lx - r.x) / r.scale, (ly - r.y) / r.scale];
  }

  /** A point of the preview in canvas (graph) coordinates: for tests and other tools. */
  canvasPoint(px, py) {
    const [lx, ly] = this.toLocal(px, py);
    return [this.node.pos[0] + lx, this.node.pos[1] + this.top + ly];
  }

  buttons() {
    const clearW = 40;
    const n = this.slots.length;
    const bw = Math.max(14, Math.min(26, (this.width - 2 * MARGIN - clearW - 4) / Math.max(1, n)));
    const out = this.slots.map((slot, i) => ({ slot, x: MARGIN + i * bw, y: 2, w: bw - 2, h: TOOLBAR - 4 }));
    out.push({ clear: true, x: MARGIN + n * bw + 4, y: 2, w: clearW, h: TOOLBAR - 4 });
    return out;
  }

  // --- drawing -------------------------------------------------------------------------------------------

  draw(ctx, node, width, y) {
    this.top = y;
    this.width = width;
    if (ctx?.canvas) this.surfaces.set(ctx.canvas, { top: y, width });
    const [pw, ph, from] = this.previewSize();
    const r = this.previewRect();
    const masks = this.maskSlots();
    const boxes = this.boxes();
    const references = modelChainSlots(this.node); // null: no DreamO Apply found on the model
    ctx.save();
    ctx.translate(0, y);
    ctx.font = "11px sans-serif";
    ctx.textBaseline = "middle";
    for (const b of this.buttons()) {
      if (b.clear) {
        ctx.fillStyle = "#333";
        ctx.fillRect(b.x, b.y, b.w, b.h);
        ctx.fillStyle = boxes[this.active] ? "#ddd" : "#777";
        ctx.textAlign = "center";
        ctx.fillText("clear", b.x + b.w / 2, b.y + b.h / 2);
        continue;
      }
      const colour = this.colours[String(b.slot)];
      ctx.fillStyle = b.slot === this.active ? colour : hexToRgba(colour, 0.3);
      ctx.fillRect(b.x, b.y, b.w, b.h);
      if (b.slot === this.active) {
        ctx.strokeStyle = "#fff";
        ctx.lineWidth = 2;
        ctx.strokeRect(b.x + 1, b.y + 1, b.w - 2, b.h - 2);
      }
      ctx.fillStyle = b.slot === this.active ? "#000" : "#eee";
      ctx.textAlign = "center";
      ctx.fillText(String(b.slot), b.x + b.w / 2, b.y + b.h / 2 + 1);
      drawReferenceMark(ctx, b, references);
    }
    // The preview: the output's aspect, a quarter grid.
    ctx.fillStyle = "#1b1b1b";
    ctx.fillRect(r.x, r.y, r.w, r.h);
    ctx.strokeStyle = "#333";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let i = 1; i < 4; i++) {
      ctx.moveTo(r.x + (r.w * i) / 4, r.y);
      ctx.lineTo(r.x + (r.w * i) / 4, r.y + r.h);
      ctx.moveTo(r.x, r.y + (r.h * i) / 4);
      ctx.lineTo(r.x + r.w, r.y + (r.h * i) / 4);
    }
    ctx.stroke();
    ctx.strokeStyle = "#555";
    ctx.strokeRect(r.x, r.y, r.w, r.h);
    const order = Object.keys(boxes).map(Number).sort((a, b) => (a === this.active) - (b === this.active) || a - b);
    for (const slot of order) {
      const [bx, by, bw, bh] = boxes[slot];
      const [x0, y0] = this.toLocal(bx, by);
      const w = bw * r.scale, h = bh * r.scale;
      const colour = this.colours[String(slot)] ?? "#ccc";
      const overridden = masks.has(slot);
      ctx.fillStyle = hexToRgba(colour, overridden ? 0.12 : 0.35);
      ctx.fillRect(x0, y0, w, h);
      ctx.strokeStyle = colour;
      ctx.lineWidth = slot === this.active ? 2 : 1;
      ctx.setLineDash(overridden ? [4, 3] : []);
      ctx.strokeRect(x0, y0, w, h);
      ctx.setLineDash([]);
      ctx.fillStyle = "#fff";
      ctx.textAlign = "left";
      const label = overridden ? `ref ${slot}: region_${slot} mask wins` : regionLabel(slot, this.stored?.texts);
      ctx.fillText(label, x0 + 3, y0 + 8, Math.max(10, w - 6));
      if (slot === this.active && !overridden) {
        ctx.fillStyle = colour;
        for (const [hx, hy] of [[x0, y0], [x0 + w, y0], [x0, y0 + h], [x0 + w, y0 + h]]) {
          ctx.fillRect(hx - HANDLE / 2, hy - HANDLE / 2, HANDLE, HANDLE);
        }
      }
    }
    ctx.fillStyle = masks.has(this.active) ? "#e0b050" : "#999";
    ctx.textAlign = "left";
    ctx.fillText(this.hint(), MARGIN, EDITOR_HEIGHT - FOOTER / 2 - 2, Math.max(20, width - 2 * MARGIN));
    ctx.restore();
  }

  /** The line under the preview: its size and where it comes from, and what dragging does for the chosen slot. */
  hint() {
    const [pw, ph, from] = this.previewSize();
    if (this.maskSlots().has(this.active)) return `${pw}×${ph} · region_${this.active} is connected: its mask wins`;
    const where = from === "default" ? "default size" : from === "drawn_regions" ? "stored size" : `from ${from}`;
    const covered = !this.boxes()[this.active] && Object.keys(this.boxes()).length ? " (over the others too)" : "";
    return `${pw}×${ph} (${where}) · drag to draw ref ${this.active}'s region${covered}`;
  }

  // --- mouse ---------------------------------------------------------------------------------------------

  hit(lx, ly) {
    for (const b of this.buttons()) {
      if (lx >= b.x && lx <= b.x + b.w && ly >= b.y && ly <= b.y + b.h) return { button: b };
    }
    const r = this.previewRect();
    const boxes = this.boxes();
    const active = boxes[this.active];
    if (active) {
      const [x0, y0] = this.toLocal(active[0], active[1]);
      const [x1, y1] = this.toLocal(active[0] + active[2], active[1] + active[3]);
      for (const [hx, hy, corner] of [[x0, y0, "nw"], [x1, y0, "ne"], [x0, y1, "sw"], [x1, y1, "se"]]) {
        if (Math.abs(lx - hx) <= HANDLE && Math.abs(ly - hy) <= HANDLE) return { resize: corner };
      }
    }
    const [px, py] = this.toPreview(lx, ly);
    const order = [this.active, ...Object.keys(boxes).map(Number).filter((k) => k !== this.active)];
    const under = order.find((slot) => {
      const b = boxes[slot];
      return b && px >= b[0] && px <= b[0] + b[2] && py >= b[1] && py <= b[1] + b[3];
    });
    // The chosen slot has no box yet: a drag draws it, over other boxes too (a click on one chooses its slot).
    if (under !== undefined && boxes[this.active]) return { move: under };
    if (lx >= r.x && lx <= r.x + r.w && ly >= r.y && ly <= r.y + r.h) return { draw: true, over: under };
    return null;
  }

  /** LiteGraph's widget mouse hook: `pos` is relative to the node; down, move, then up. */
  mouse(event, pos) {
    const kind = /down$/.test(event.type) ? "down" : /move$/.test(event.type) ? "move" : /up$/.test(event.type) ? "up" : "";
    this.useSurfaceOf(event);
    const lx = pos[0], ly = pos[1] - this.top;
    if (kind === "down") return this.down(lx, ly);
    if (kind === "move" && this.drag) return this.move(lx, ly);
    if (kind === "up" && this.drag) {
      const d = this.drag;
      this.drag = null;
      if (d.preview) this.setBoxes(d.preview);
      else if (d.mode === "draw" && d.over !== undefined) this.active = d.over; // a click on a box: its slot
      this.redraw();
      return true;
    }
    return false;
  }

  /** Read the event in the geometry of the drawing it happened on (the canvas, or a canvas of the editor's own). */
  useSurfaceOf(event) {
    const target = event?.target;
    const own = typeof HTMLCanvasElement !== "undefined" && target instanceof HTMLCanvasElement ? target : null;
    const g = (own && this.surfaces.get(own)) ?? (app.canvas?.canvas && this.surfaces.get(app.canvas.canvas));
    if (g) {
      this.top = g.top;
      this.width = g.width;
    }
  }

  down(lx, ly) {
    const h = this.hit(lx, ly);
    if (!h) return false;
    if (h.button) {
      if (h.button.clear) {
        const boxes = this.boxes(), texts = this.texts();
        delete boxes[this.active];
        delete texts[this.active]; // clear takes the region's words with its box
        this.setBoxes(boxes, texts);
      } else {
        this.active = h.button.slot;
      }
      this.redraw();
      return true;
    }
    const start = this.toPreview(lx, ly);
    const boxes = this.boxes();
    if (h.move) this.active = h.move;
    this.drag = { mode: h.resize ? "resize" : h.move ? "move" : "draw", corner: h.resize, start, startLocal: [lx, ly],
                  original: boxes[this.active] ? [...boxes[this.active]] : null, boxes, preview: null, over: h.over };
    this.redraw();
    return true;
  }

  move(lx, ly) {
    const d = this.drag;
    const [pw, ph] = this.previewSize();
    const clampX = (v) => Math.max(0, Math.min(pw, v));
    const clampY = (v) => Math.max(0, Math.min(ph, v));
    const [px, py] = this.toPreview(lx, ly);
    const boxes = { ...d.boxes };
    if (d.mode === "draw") {
      if (Math.hypot(lx - d.startLocal[0], ly - d.startLocal[1]) < MIN_DRAG) return false;
      const x0 = clampX(Math.min(d.start[0], px)), x1 = clampX(Math.max(d.start[0], px));
      const y0 = clampY(Math.min(d.start[1], py)), y1 = clampY(Math.max(d.start[1], py));
      if (x1 - x0 < 1 || y1 - y0 < 1) return false;
      boxes[this.active] = [x0, y0, x1 - x0, y1 - y0];
    } else if (d.mode === "move") {
      const [x, y, w, h] = d.original;
      const nx = Math.max(0, Math.min(pw - w, x + px - d.start[0]));
      const ny = Math.max(0, Math.min(ph - h, y + py - d.start[1]));
      boxes[this.active] = [nx, ny, w, h];
    } else {
      let [x0, y0, x1, y1] = [d.original[0], d.original[1], d.original[0] + d.original[2], d.original[1] + d.original[3]];
      if (d.corner.includes("w")) x0 = clampX(px);
      if (d.corner.includes("e")) x1 = clampX(px);
      if (d.corner.includes("n")) y0 = clampY(py);
      if (d.corner.includes("s")) y1 = clampY(py);
      [x0, x1] = [Math.min(x0, x1), Math.max(x0, x1)];
      [y0, y1] = [Math.min(y0, y1), Math.max(y0, y1)];
      if (x1 - x0 < 1 || y1 - y0 < 1) return false;
      boxes[this.active] = [x0, y0, x1 - x0, y1 - y0];
    }
    d.preview = boxes;
    this.setBoxes(boxes); // live: the stored text follows the mouse
    return true;
  }
}

/** A dot on a slot button whose slot has a reference on the DreamO Apply of the model (`references`, or null when
 *  no DreamO Apply is found, then nothing is marked). */
function drawReferenceMark(ctx, button, references) {
  if (!references?.includes(button.slot)) return;
  ctx.fillStyle = "#fff";
  ctx.beginPath();
  ctx.arc(button.x + button.w - 4, button.y + 4, 2.5, 0, 2 * Math.PI);
  ctx.fill();
}

function colourOption(nodeData) {
  const spec = nodeData?.input?.optional?.[TEXT_WIDGET] ?? nodeData?.input?.required?.[TEXT_WIDGET];
  const colours = spec?.[1]?.[COLOUR_OPTION];
  return colours && typeof colours === "object" && Object.keys(colours).length ? colours : null;
}

/** The properties panel (frontend 1.49) lists a node's widgets: the stored JSON is the editor's business. */
function hideFromPanel(widget) {
  widget.options ??= {};
  widget.options.hideInPanel = true;
}

app.registerExtension({
  name: "DreamO.RegionEditor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const colours = colourOption(nodeData);
    if (!colours) return; // a pack server without the editor's input: leave the node as it is

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      const text = this.widgets?.find((w) => w.name === TEXT_WIDGET);
      if (!text || this.widgets.some((w) => w.name === EDITOR_WIDGET)) return r;
      const editor = new RegionEditor(this, text, colours);
      this.dreamoRegionEditor = editor;
      // The editor shows (and writes) the text; without the extension it is a plain text field. The Vue-nodes
      // view keeps showing it (above the editor): typed there, the editor follows.
      text.hidden = true;
      // Older frontends (1.27) still lay out a hidden widget's height: give it none (LiteGraph's way to hide).
      text.computeSize = () => [0, -4];
      hideFromPanel(text);
      const callback = text.callback;
      text.callback = function () {
        const r = callback?.apply(this, arguments);
        editor.redraw();
        return r;
      };
      this.addCustomWidget({
        name: EDITOR_WIDGET,
        label: "regions", // what the properties panel calls it
        type: EDITOR_WIDGET,
        value: null,
        serialize: false, // not in widgets_values: the saved file is the same as without the extension
        options: { serialize: false }, // not queued either
        computeSize: (width) => [width, EDITOR_HEIGHT],
        draw: (ctx, node, width, y) => editor.draw(ctx, node, width, y),
        mouse: (event, pos) => editor.mouse(event, pos),
      });
      const size = this.computeSize?.();
      if (size && this.size) this.setSize?.([Math.max(this.size[0], 320), Math.max(this.size[1], size[1])]);
      return r;
    };
  },
});
