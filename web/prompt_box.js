// DreamO for ComfyUI: the placeholder-aware prompt box of DreamO Text Encode.
// - [ref#k] and [res] are highlighted in the text box (a see-through layer over the textarea, same font and wrap).
// - Typing `[` offers the placeholders of the connected slots (and [res]); arrows + Enter/Tab or a click insert one.
// - A placeholder whose slot is empty, or a near miss ([REF#1], [ref 1], [ref#10]), is marked while the prompt is
//   written, and the node shows the error the prompt would stop with. The check itself is the node's own Python
//   check, asked through the pack's route POST /dreamo/check_prompt, so the words are the same as when it runs.
// - The references checked are the node's own ref_k, or, when none is connected to it, those of the DreamO Apply its
//   conditioning feeds (connected once is enough).
// - The error shows inside the node (its feedback widget, web/feedback.js, also in the Vue-nodes view) and as the
//   text box's tooltip.
// Nothing is stored in the node: the text widget keeps the prompt exactly as typed.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { connectedSlots } from "./growing_inputs.js";
import { REFERENCE_NODE, REF_PREFIX as PREFIX, TEXT_NODE as NODE } from "./dreamo_nodes.js";
import { FEEDBACK, shownReferences } from "./dreamo.js";
import { feedback } from "./feedback.js";

const TEXT_WIDGET = "text";
const CHECK_ROUTE = "/dreamo/check_prompt";
const CHECK_DELAY_MS = 150;
const MIRRORED_STYLES = [
  "fontFamily", "fontSize", "fontWeight", "fontStyle", "lineHeight", "letterSpacing", "wordSpacing", "textIndent",
  "textTransform", "whiteSpace", "overflowWrap", "wordBreak", "tabSize", "paddingTop", "paddingRight",
  "paddingBottom", "paddingLeft", "direction",
];

let styleAdded = false;
function addStyle() {
  if (styleAdded) return;
  styleAdded = true;
  const style = document.createElement("style");
  style.textContent = `
    .dreamo-prompt-overlay { position: absolute; pointer-events: none; overflow: hidden; color: transparent;
      box-sizing: content-box; margin: 0; border: 0; z-index: 1; }
    .dreamo-prompt-overlay span { border-radius: 3px; }
    .dreamo-prompt-overlay [data-kind="placeholder"] { background: rgba(90, 160, 255, 0.35); }
    .dreamo-prompt-overlay [data-kind="empty_slot"] { background: rgba(255, 170, 0, 0.35);
      text-decoration: underline wavy rgb(255, 170, 0); text-decoration-skip-ink: none; }
    .dreamo-prompt-overlay [data-kind="near_miss"] { background: rgba(255, 70, 70, 0.3);
      text-decoration: underline wavy rgb(255, 70, 70); text-decoration-skip-ink: none; }
    .dreamo-placeholder-menu { position: fixed; z-index: 10000; min-width: 150px; padding: 3px 0;
      background: var(--comfy-menu-bg, #222); color: var(--input-text, #ddd); font: 12px sans-serif;
      border: 1px solid var(--border-color, #555); border-radius: 4px; box-shadow: 0 2px 8px rgba(0,0,0,0.5); }
    .dreamo-placeholder-menu div { padding: 3px 10px; cursor: pointer; white-space: nowrap; }
    .dreamo-placeholder-menu div.active { background: rgba(90, 160, 255, 0.45); }
    .dreamo-placeholder-menu div.hint { cursor: default; opacity: 0.65; font-style: italic; }
  `;
  document.head.appendChild(style);
}

/** UTF-16 offsets of every code point boundary: Python counts code points, JavaScript strings UTF-16 units. */
function codePointOffsets(text) {
  const offsets = [0];
  for (const ch of text) offsets.push(offsets[offsets.length - 1] + ch.length);
  return offsets;
}

/** {slot: task} of the references the prompt is checked against (task read from a DreamO Reference Encode upstream, "ip"
 *  otherwise): the node's own, else those of the DreamO Apply it feeds. */
export function connectedReferences(node) {
  const refs = {};
  for (const [slot, origin] of Object.entries(shownReferences(node))) {
    const task = origin?.type === REFERENCE_NODE ? origin.widgets?.find((w) => w.name === "task")?.value : null;
    refs[slot] = typeof task === "string" ? task : "ip";
  }
  return refs;
}

/** True when the node's own ref_k are empty: the references checked come from DreamO Apply. */
function referencesFromApply(node) {
  return !connectedSlots(node, PREFIX).length;
}

export function placeholderChoices(node) {
  return [...Object.keys(connectedReferences(node)).map((k) => `[ref#${k}]`), "[res]"];
}

class PromptBox {
  constructor(node, widget) {
    this.node = node;
    this.widget = widget;
    this.bound = new WeakSet();
    this.overlay = document.createElement("div");
    this.overlay.className = "dreamo-prompt-overlay";
    this.menu = null;
    this.check = null; // the last answer of the route for `checkedKey`
    this.checkedKey = null;
    this.timer = null;
    this.renderedKey = null;
    if (typeof ResizeObserver !== "undefined") this.resizeObserver = new ResizeObserver(() => this.layout());
    this.bind(this.textarea);
  }

  /** The text box on screen: the widget's own element on the canvas, the node's textarea with Vue nodes. */
  get textarea() {
    const own = this.widget.element;
    if (own?.isConnected || !LiteGraph.vueNodesMode) return own;
    return document.querySelector(`[data-node-id="${this.node.id}"] textarea`) ?? own;
  }

  bind(ta) {
    if (!ta || this.bound.has(ta)) return;
    this.bound.add(ta);
    ta.addEventListener("input", () => this.onInput());
    ta.addEventListener("scroll", () => this.syncScroll());
    ta.addEventListener("keydown", (e) => this.onKeyDown(e), true);
    ta.addEventListener("blur", () => setTimeout(() => this.closeMenu(), 150));
    this.resizeObserver?.observe(ta);
  }

  /** The prompt as it will be queued: the widget's value (the box on screen may lag behind it). */
  get text() {
    return String(this.widget.value ?? "");
  }

  /** True when the prompt comes from a link, not from this box: then the box is not what will be encoded. */
  textIsLinked() {
    return this.node.inputs?.some((i) => i.name === TEXT_WIDGET && i.link != null) ?? false;
  }

  /** Called on every draw of the node and by a 300 ms driver: cheap unless something changed. */
  refresh() {
    const ta = this.textarea;
    this.bind(ta);
    if (ta?.isConnected && ta.parentElement && this.overlay.parentElement !== ta.parentElement) {
      ta.parentElement.appendChild(this.overlay);
      this.layout();
    }
    if (this.textIsLinked()) {
      if (this.node.dreamoPromptCheck) this.node.dreamoPromptCheck = null;
      this.showErrorOnHover(null);
      this.showInNode(null);
      this.checkedKey = null;
      this.overlay.replaceChildren();
      this.renderedKey = null;
      return;
    }
    const key = this.requestKey();
    if (key !== this.checkedKey && key !== this.pendingKey) this.scheduleCheck();
    this.render();
  }

  requestKey() {
    return JSON.stringify([this.text, connectedReferences(this.node), this.styleOption()]);
  }

  styleOption() {
    if (referencesFromApply(this.node)) return false; // the node only adds it for references connected to it
    const w = this.node.widgets?.find((w) => w.name === "add_style_instruction");
    return w ? Boolean(w.value) : true;
  }

  scheduleCheck() {
    clearTimeout(this.timer);
    this.pendingKey = this.requestKey();
    this.timer = setTimeout(() => this.runCheck(), CHECK_DELAY_MS);
  }

  async runCheck() {
    const key = this.requestKey();
    const [text, references, addStyle] = JSON.parse(key);
    let answer = null;
    try {
      const res = await api.fetchApi(CHECK_ROUTE, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text, references, add_style_instruction: addStyle }),
      });
      if (res.ok) answer = await res.json();
    } catch {
      answer = null; // no server or an older pack on it: no marks, the node still checks when it runs
    }
    this.pendingKey = null;
    if (key !== this.requestKey() || this.textIsLinked()) return; // changed meanwhile; the next draw asks again
    this.checkedKey = key;
    this.check = answer;
    this.node.dreamoPromptCheck = answer;
    this.showErrorOnHover(answer?.error ?? null);
    this.showInNode(answer);
    this.node.setDirtyCanvas?.(true, true);
    this.render();
  }

  /** The error as the text box's tooltip too (with Vue nodes nothing is drawn under the node). */
  showErrorOnHover(error) {
    const ta = this.textarea;
    if (!ta) return;
    if (error) {
      if (!ta.dataset.dreamoError) ta.dataset.dreamoTitle = ta.title ?? "";
      ta.dataset.dreamoError = "1";
      ta.title = error;
    } else if (ta.dataset.dreamoError) {
      ta.title = ta.dataset.dreamoTitle ?? "";
      delete ta.dataset.dreamoError;
    }
  }

  /** The check's error, and a style reference the prompt lacks the instruction for, inside the node. */
  showInNode(answer) {
    const lines = [];
    if (answer?.error) lines.push({ kind: "error", text: answer.error });
    for (const note of answer?.notes ?? []) if (/lacks/.test(note)) lines.push({ kind: "warn", text: note });
    feedback(this.node, FEEDBACK[NODE]).set("check", lines);
  }

  layout() {
    const ta = this.textarea;
    const o = this.overlay;
    if (!o.parentElement || !ta) return;
    const cs = getComputedStyle(ta);
    for (const prop of MIRRORED_STYLES) o.style[prop] = cs[prop];
    if (cs.whiteSpace === "normal") o.style.whiteSpace = "pre-wrap";
    const padX = parseFloat(cs.paddingLeft) + parseFloat(cs.paddingRight);
    const padY = parseFloat(cs.paddingTop) + parseFloat(cs.paddingBottom);
    o.style.left = `${ta.offsetLeft + ta.clientLeft}px`;
    o.style.top = `${ta.offsetTop + ta.clientTop}px`;
    o.style.width = `${Math.max(0, ta.clientWidth - padX)}px`;
    o.style.height = `${Math.max(0, ta.clientHeight - padY)}px`;
    this.syncScroll();
  }

  syncScroll() {
    this.overlay.scrollTop = this.textarea?.scrollTop ?? 0;
    this.overlay.scrollLeft = this.textarea?.scrollLeft ?? 0;
  }

  /** The overlay's content: the prompt as transparent text with the marked spans. */
  render() {
    const text = this.text;
    const shown = this.textarea?.value === text; // marks only over the text they belong to
    const marks = shown && this.checkedKey && JSON.parse(this.checkedKey)[0] === text ? this.check?.marks ?? [] : [];
    const key = JSON.stringify([text, marks]);
    if (key === this.renderedKey) return;
    this.renderedKey = key;
    const offsets = codePointOffsets(text);
    const o = this.overlay;
    o.replaceChildren();
    let at = 0;
    for (const mark of marks) {
      const start = offsets[mark.start];
      const end = offsets[mark.end];
      if (start == null || end == null || start < at) continue;
      if (start > at) o.append(text.slice(at, start));
      const span = document.createElement("span");
      span.dataset.kind = mark.kind;
      if (mark.slot != null) span.dataset.slot = mark.slot;
      span.textContent = text.slice(start, end);
      o.append(span);
      at = end;
    }
    o.append(text.slice(at) + "\n");
    this.syncScroll();
  }

  // --- `[` completion -------------------------------------------------------------------------------------

  onInput() {
    this.scheduleCheck();
    this.render();
    const open = this.openBracket();
    if (open === null) this.closeMenu();
    else this.showMenu(open);
  }

  /** Index of the `[` the caret is completing (no space or `]` between it and the caret), or null. */
  openBracket() {
    const ta = this.textarea;
    if (ta.selectionStart !== ta.selectionEnd) return null;
    const before = this.text.slice(0, ta.selectionStart);
    const m = /\[[^\[\]\s]{0,6}$/.exec(before);
    return m ? m.index : null;
  }

  showMenu(open) {
    const typed = this.text.slice(open, this.textarea.selectionStart).toLowerCase();
    const choices = placeholderChoices(this.node).filter((c) => c.startsWith(typed));
    if (!choices.length) return this.closeMenu();
    addStyle();
    if (!this.menu) {
      this.menu = document.createElement("div");
      this.menu.className = "dreamo-placeholder-menu";
      this.menu.addEventListener("mousedown", (e) => {
        e.preventDefault(); // keep the focus in the text box
        const item = e.target.closest("[data-choice]");
        if (item) this.insert(item.dataset.choice);
      });
      document.body.appendChild(this.menu);
    }
    this.open = open;
    this.choices = choices;
    this.active = Math.min(this.active ?? 0, choices.length - 1);
    this.menu.replaceChildren(...choices.map((c, i) => {
      const item = document.createElement("div");
      item.dataset.choice = c;
      item.textContent = c;
      if (i === this.active) item.className = "active";
      return item;
    }));
    if (!Object.keys(connectedReferences(this.node)).length) {
      const hint = document.createElement("div");
      hint.className = "hint";
      hint.textContent = "connect a reference to ref_1 to name it [ref#1]";
      this.menu.append(hint);
    }
    const caret = this.caretRect(open);
    this.menu.style.left = `${Math.round(caret.left)}px`;
    this.menu.style.top = `${Math.round(caret.bottom + 2)}px`;
  }

  closeMenu() {
    this.menu?.remove();
    this.menu = null;
    this.active = 0;
  }

  onKeyDown(e) {
    if (!this.menu) return;
    const n = this.choices.length;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      this.active = (this.active + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
      this.showMenu(this.open);
    } else if (e.key === "Enter" || e.key === "Tab") {
      this.insert(this.choices[this.active]);
    } else if (e.key === "Escape") {
      this.closeMenu();
    } else {
      return;
    }
    e.preventDefault();
    e.stopPropagation();
  }

  insert(choice) {
    const ta = this.textarea;
    const end = ta.selectionStart;
    const open = this.openBracket() ?? end;
    // Replace what was typed after `[` and swallow a `]` the user already has after the caret.
    const tail = this.text.slice(end).match(/^[^\[\]\s]*\]/)?.[0] ?? "";
    ta.setRangeText(choice, open, end + tail.length, "end");
    this.closeMenu();
    ta.dispatchEvent(new Event("input", { bubbles: true })); // the widget's own listener stores the value
  }

  /** Screen rectangle of character `index` in the textarea, measured on a mirror of it. */
  caretRect(index) {
    const ta = this.textarea;
    const mirror = this.overlay.cloneNode(false);
    mirror.style.visibility = "hidden";
    mirror.append(this.text.slice(0, index));
    const marker = document.createElement("span");
    marker.textContent = "[";
    mirror.append(marker);
    (this.overlay.parentElement ?? document.body).appendChild(mirror);
    mirror.scrollTop = ta.scrollTop;
    const rect = marker.getBoundingClientRect();
    mirror.remove();
    return rect.width || rect.height ? rect : ta.getBoundingClientRect();
  }

  remove() {
    clearTimeout(this.timer);
    this.resizeObserver?.disconnect();
    this.overlay.remove();
    this.closeMenu();
  }
}

const boxes = new Set();
let driver = null;
function drive() {
  for (const box of boxes) {
    if (box.node.graph?.getNodeById?.(box.node.id) !== box.node) {
      box.remove(); // the node left its graph (deleted, or the graph was replaced)
      boxes.delete(box);
      continue;
    }
    box.refresh();
  }
}

app.registerExtension({
  name: "DreamO.PromptBox",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      const widget = this.widgets?.find((w) => w.name === TEXT_WIDGET);
      if (widget?.element instanceof HTMLTextAreaElement) {
        addStyle();
        this.dreamoPromptBox = new PromptBox(this, widget);
        boxes.add(this.dreamoPromptBox);
        driver ??= setInterval(drive, 300); // also after connections/values change while nothing is drawn
      }
      return r;
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function () {
      const r = onDrawForeground?.apply(this, arguments);
      this.dreamoPromptBox?.refresh();
      return r;
    };

    const onResize = nodeType.prototype.onResize;
    nodeType.prototype.onResize = function () {
      const r = onResize?.apply(this, arguments);
      this.dreamoPromptBox?.layout();
      return r;
    };

    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      this.dreamoPromptBox?.remove();
      boxes.delete(this.dreamoPromptBox);
      return onRemoved?.apply(this, arguments);
    };
  },
});
