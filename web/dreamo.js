// DreamO for ComfyUI: what the pack's nodes have to say, drawn under the node where the user is looking.
// - DreamORefEncode / DreamOTextEncode: the `dreamo_info` text the node returns after it runs (background removal,
//   face alignment, resize, fallbacks; what was changed in a prompt).
// - DreamOTextEncode: the prompt check's error, before the prompt is queued (set by prompt_box.js).
// - DreamOApply / DreamOTextEncode: after a run, a thumbnail of the reference in each connected slot, as
//   DreamORefEncode prepared it (the picture that node itself shows), labelled with its slot.
// Everything is drawn, not stored in widgets: saved workflows keep exactly the node's own inputs.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { connectedSlots, getLink } from "./growing_inputs.js";

const INFO_KEY = "dreamo_info"; // the `ui` key the Python nodes return
const NODES_WITH_INFO = new Set(["DreamORefEncode", "DreamOTextEncode"]);
const NODES_WITH_PREVIEWS = new Set(["DreamOApply", "DreamOTextEncode"]);
const REFERENCE_NODE = "DreamORefEncode";
const LINE_HEIGHT = 14;
const THUMB = 64;

function wrap(ctx, text, width) {
  const lines = [];
  for (const paragraph of text.split("\n")) {
    let line = "";
    for (const word of paragraph.split(" ")) {
      const candidate = line ? `${line} ${word}` : word;
      if (ctx.measureText(candidate).width > width && line) {
        lines.push(line);
        line = word;
      } else {
        line = candidate;
      }
    }
    if (line) lines.push(line);
  }
  return lines;
}

function imageUrl(image) {
  const params = new URLSearchParams({ filename: image.filename, type: image.type ?? "temp",
                                       subfolder: image.subfolder ?? "" });
  return api.apiURL(`/view?${params}`);
}

/** The prepared reference pictures of the DreamORefEncode connected to each `ref_k` input: [{slot, img}]. */
export function referencePreviews(node) {
  const out = [];
  for (const slot of connectedSlots(node, "ref_")) {
    const input = node.inputs.find((i) => i.name === `ref_${slot}`);
    const link = getLink(node.graph, input.link);
    const origin = link && node.graph.getNodeById(link.origin_id);
    const img = origin?.type === REFERENCE_NODE ? origin.dreamoPreview : null;
    if (img) out.push({ slot, img, originId: origin.id });
  }
  return out;
}

function drawText(ctx, text, color, x, y, width) {
  ctx.fillStyle = color;
  const lines = wrap(ctx, text, width);
  lines.forEach((line, i) => ctx.fillText(line, x, y + i * LINE_HEIGHT));
  return lines.length * LINE_HEIGHT;
}

app.registerExtension({
  name: "DreamO.ReferenceInfo",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const name = nodeData?.name;
    if (!NODES_WITH_INFO.has(name) && !NODES_WITH_PREVIEWS.has(name)) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (NODES_WITH_INFO.has(name)) this.dreamoInfo = (message?.[INFO_KEY] ?? []).join("\n");
      const first = message?.images?.[0];
      if (name === REFERENCE_NODE && first) {
        const img = new Image();
        img.onload = () => app.graph?.setDirtyCanvas?.(true, true);
        img.src = imageUrl(first);
        this.dreamoPreview = img;
      }
      this.setDirtyCanvas?.(true, true);
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (this.flags?.collapsed) return;
      const width = Math.max(this.size[0] - 12, 80);
      let y = this.size[1] + 16;
      ctx.save();
      ctx.font = "11px sans-serif";
      const check = this.dreamoPromptCheck;
      if (check?.error) y += drawText(ctx, check.error, "#ff6b6b", 6, y, width) + 4;
      if (this.dreamoInfo) {
        const warn = this.dreamoInfo.includes("kept") || this.dreamoInfo.includes("fell back");
        y += drawText(ctx, this.dreamoInfo, warn ? "#e0b050" : "#8fb7c9", 6, y, width) + 4;
      }
      if (NODES_WITH_PREVIEWS.has(name)) {
        let x = 6;
        const drawn = [];
        for (const { slot, img } of referencePreviews(this)) {
          if (!img.complete || !img.naturalWidth) continue;
          const w = Math.max(8, Math.round((THUMB * img.naturalWidth) / img.naturalHeight));
          if (x + w > this.size[0] && x > 6) break;
          ctx.drawImage(img, x, y - 8, w, THUMB);
          ctx.fillStyle = "rgba(0,0,0,0.6)";
          ctx.fillRect(x, y - 8, 38, 14);
          ctx.fillStyle = "#ffffff";
          ctx.fillText(`ref_${slot}`, x + 3, y + 2);
          x += w + 6;
          drawn.push(slot);
        }
        this.dreamoDrawnPreviews = drawn; // what the canvas shows, for tests and debugging
      }
      ctx.restore();
    };
  },
});
