// DreamO for ComfyUI: frontend extension.
// Shows what DreamORefEncode did to a reference (background removal, face alignment, resize, fallbacks)
// and what DreamOTextEncode changed in a prompt, under the node after it runs, so the information is seen where the node is, not only in the console.
// The text is drawn, not stored in a widget: saved workflows keep exactly the node's own inputs.
import { app } from "../../scripts/app.js";

const INFO_KEY = "dreamo_info"; // the `ui` key the Python node returns
const NODES_WITH_INFO = new Set(["DreamORefEncode", "DreamOTextEncode"]);
const LINE_HEIGHT = 14;

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

app.registerExtension({
  name: "DreamO.ReferenceInfo",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES_WITH_INFO.has(nodeData?.name)) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      this.dreamoInfo = (message?.[INFO_KEY] ?? []).join("\n");
      this.setDirtyCanvas?.(true, true);
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (!this.dreamoInfo || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = "11px sans-serif";
      ctx.fillStyle = this.dreamoInfo.includes("kept") || this.dreamoInfo.includes("fell back")
        ? "#e0b050" : "#8fb7c9";
      const lines = wrap(ctx, this.dreamoInfo, Math.max(this.size[0] - 12, 80));
      lines.forEach((line, i) => ctx.fillText(line, 6, this.size[1] + 16 + i * LINE_HEIGHT));
      ctx.restore();
    };
  },
});
