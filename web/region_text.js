// DreamO for ComfyUI: the words of each region (regional prompts) on DreamO Routing, under the region editor.
// One text field edits the words of the slot chosen in the editor (its slot buttons, or a click on a box); the words
// are stored with the boxes in the node's own `drawn_regions` value ("texts": {"1": "..."}), so the saved workflow,
// the API prompt and a frontend without this extension carry them the same way. DreamO Routing encodes them and
// appends them to its positive output, each routed to its region. The field itself is never saved nor queued.
import { app } from "../../scripts/app.js";
import "./region_editor.js"; // registers first, so its editor exists when this field is added
import { ROUTING_NODE as NODE } from "./node_ids.js";

const FIELD_WIDGET = "dreamo_region_words";
const FIELD_HEIGHT = 64;

/** The field's caption for the chosen slot. */
export function wordsPlaceholder(slot) {
  return `Words of region ${slot} (its box, slot ${slot}): e.g. "an old man in a grey coat [ref#${slot}]". ` +
    "Empty: the region routes its reference only.";
}

class RegionWords {
  constructor(node, editor) {
    this.node = node;
    this.editor = editor;
    this.slot = null;
    this.element = document.createElement("textarea");
    this.element.className = "dreamo-region-words comfy-multiline-input";
    this.element.spellcheck = false;
    this.element.style.resize = "none";
    this.element.addEventListener("input", () => this.write());
    this.element.addEventListener("pointerdown", (e) => e.stopPropagation());
    this.sync();
  }

  /** Show the chosen slot's words (when the slot or the stored value changed, not while typing into it). */
  sync() {
    const slot = this.editor.active;
    const words = this.editor.texts()[slot] ?? "";
    if (slot !== this.slot || (document.activeElement !== this.element && this.element.value !== words)) {
      this.slot = slot;
      this.element.value = words;
      this.element.placeholder = wordsPlaceholder(slot);
      this.element.dataset.slot = String(slot);
    }
  }

  write() {
    const texts = this.editor.texts();
    texts[this.slot] = this.element.value;
    this.editor.setBoxes(this.editor.boxes(), texts);
  }
}

app.registerExtension({
  name: "DreamO.RegionWords",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      const editor = this.dreamoRegionEditor; // made by region_editor.js (loaded first: this module's import)
      if (!editor || typeof this.addDOMWidget !== "function" || this.widgets?.some((w) => w.name === FIELD_WIDGET)) {
        return r;
      }
      const words = new RegionWords(this, editor);
      this.dreamoRegionWords = words;
      const redraw = editor.redraw.bind(editor);
      editor.redraw = () => { // the chosen slot or the stored value changed: follow it
        redraw();
        words.sync();
      };
      const widget = this.addDOMWidget(FIELD_WIDGET, "textarea", words.element, {
        getValue: () => words.element.value,
        setValue: () => {}, // the words live in drawn_regions, not here
        getMinHeight: () => FIELD_HEIGHT,
        getMaxHeight: () => FIELD_HEIGHT,
        serialize: false,
      });
      widget.label = "words"; // what the properties panel calls it (not the internal name)
      widget.serialize = false; // not in widgets_values: the saved file is the same as without the extension
      widget.options = { ...(widget.options ?? {}), serialize: false }; // not queued either
      widget.computeSize = (width) => [width, FIELD_HEIGHT];
      const size = this.computeSize?.();
      if (size && this.size) this.setSize?.([this.size[0], Math.max(this.size[1], size[1])]);
      return r;
    };
  },
});
