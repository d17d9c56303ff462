// DreamO for ComfyUI: what a DreamO node has to say, shown inside the node.
// One DOM widget per node ("dreamo_feedback") holds its messages (errors, warnings, notes) and a row of small
// pictures: what DreamO Reference Encode encoded, or on the nodes that take references, the one in each slot. The frontend lays it out like any widget,
// so it never covers a neighbour, and the Vue-nodes view shows it too. It is never saved nor queued: workflows
// keep exactly the node's own inputs. Other modules set their part by key: `feedback(node).set(key, lines)`.
import { api } from "../../scripts/api.js";

const WIDGET = "dreamo_feedback";
const LINE = 15; // px per line of 11px text
const THUMB = 56;
const MAX_HEIGHT = 220; // longer text scrolls (the full text is also the element's tooltip)
const ORDER = { error: 0, warn: 1, info: 2, hint: 3 };
const MARGIN = 4; // the DOM widget's margin above and below the element (the frontends' default is 10)

let styled = false;
function addStyle() {
  if (styled) return;
  styled = true;
  const style = document.createElement("style");
  style.textContent = `
    .dreamo-feedback { box-sizing: border-box; width: 100%; height: 100%; overflow: hidden auto; padding: 2px 6px;
      font: 11px/${LINE}px sans-serif; color: #8fb7c9; white-space: pre-wrap; overflow-wrap: anywhere;
      pointer-events: none; }
    .dreamo-feedback.scrolls { pointer-events: auto; }
    .dreamo-feedback [data-kind="error"] { color: #ff6b6b; }
    .dreamo-feedback [data-kind="warn"] { color: #e0b050; }
    .dreamo-feedback [data-kind="info"] { color: #8fb7c9; }
    .dreamo-feedback [data-kind="hint"] { color: #8a8a8a; font-style: italic; }
    .dreamo-feedback .thumbs { display: flex; gap: 6px; height: ${THUMB}px; margin: 2px 0 4px; overflow: hidden; }
    .dreamo-feedback figure { position: relative; margin: 0; height: ${THUMB}px; min-width: ${THUMB}px;
      border: 1px solid #444; border-radius: 3px; background: #1b1b1b; overflow: hidden; }
    .dreamo-feedback figure img { height: 100%; display: block; }
    .dreamo-feedback figure span { position: absolute; left: 0; top: 0; padding: 0 3px; font-size: 10px;
      line-height: 13px; background: rgba(0,0,0,0.65); color: #fff; }
    .dreamo-feedback figure.stale img { opacity: 0.35; }
    .dreamo-feedback figure.stale::after { content: "outdated"; position: absolute; left: 0; right: 0; bottom: 0;
      font-size: 10px; line-height: 13px; text-align: center; background: rgba(120, 80, 0, 0.8); color: #fff; }
    .dreamo-feedback figure.empty span { background: none; color: #999; }
  `;
  document.head.appendChild(style);
}

export function viewUrl(image) {
  const params = new URLSearchParams({ filename: image.filename, type: image.type ?? "temp",
                                       subfolder: image.subfolder ?? "" });
  return api.apiURL(`/view?${params}`);
}

class Feedback {
  constructor(node, { reserveLines = 0, thumbnails = false } = {}) {
    addStyle();
    this.node = node;
    this.parts = new Map(); // key -> [{kind, text}]
    this.thumbs = null; // [{slot | label, src, stale, title}] or null
    this.reserveLines = reserveLines;
    this.thumbnails = thumbnails;
    this.element = document.createElement("div");
    this.element.className = "dreamo-feedback";
    this.rendered = null;
    this.height = this.reserved();
    this.widget = node.addDOMWidget(WIDGET, "dreamo_feedback", this.element, {
      margin: MARGIN,
      serialize: false, // not in the prompt
      hideInPanel: true, // nothing to edit in the properties panel
      getMinHeight: () => this.height,
      getMaxHeight: () => this.height,
      getValue: () => undefined,
      setValue: () => {},
    });
    this.widget.serialize = false; // not in the saved widgets_values
    this.widget.label = "";
  }

  /** Height kept free from the start, so the first run does not grow the node into its neighbours. */
  reserved() {
    return (this.thumbnails ? THUMB + 6 : 0) + this.reserveLines * LINE + 4 + 2 * MARGIN;
  }

  /** Set (or with null/empty, clear) the lines of one part: [{kind, text}] or a string (info). */
  set(key, lines) {
    const list = !lines ? [] : typeof lines === "string" ? [{ kind: "info", text: lines }] : lines;
    const clean = list.filter((l) => l && l.text);
    if (clean.length) this.parts.set(key, clean);
    else this.parts.delete(key);
    this.render();
  }

  get(key) {
    return this.parts.get(key) ?? [];
  }

  setThumbs(thumbs) {
    this.thumbs = thumbs?.length ? thumbs : null;
    this.render();
  }

  lines() {
    return [...this.parts.values()].flat().sort((a, b) => ORDER[a.kind] - ORDER[b.kind]);
  }

  render() {
    const lines = this.lines();
    const key = JSON.stringify([lines, this.thumbs]);
    if (key === this.rendered) return;
    this.rendered = key;
    const children = [];
    if (this.thumbnails && this.thumbs) {
      const row = document.createElement("div");
      row.className = "thumbs";
      for (const t of this.thumbs) {
        const fig = document.createElement("figure");
        if (t.slot != null) fig.dataset.slot = t.slot;
        if (t.src) {
          const img = document.createElement("img");
          img.src = t.src;
          fig.append(img);
        } else {
          fig.classList.add("empty");
        }
        if (t.stale) fig.classList.add("stale");
        fig.title = t.title ?? "";
        const label = document.createElement("span");
        label.textContent = t.label ?? `ref_${t.slot}`;
        fig.append(label);
        row.append(fig);
      }
      children.push(row);
    }
    for (const l of lines) {
      const div = document.createElement("div");
      div.dataset.kind = l.kind;
      div.textContent = l.text;
      children.push(div);
    }
    this.element.replaceChildren(...children);
    this.element.title = lines.map((l) => l.text).join("\n");
    this.fit();
  }

  /** Grow (never shrink below the reserved height) to show the text; the node grows with it if it must. Measured
   *  on the element when it is on screen, else estimated from the node's width. */
  fit() {
    const el = this.element;
    const thumbs = this.thumbnails && this.thumbs ? THUMB + 6 : 0;
    let content;
    if (el.isConnected && el.clientWidth > 0) {
      const text = [...el.children].filter((c) => !c.classList.contains("thumbs"));
      content = thumbs + text.reduce((h, c) => h + c.offsetHeight, 0);
    } else {
      const width = Math.max(60, (this.node.size?.[0] ?? 200) - 30);
      content = thumbs + this.lines().reduce((n, l) => n + estimateLines(l.text, width), 0) * LINE;
    }
    const wanted = Math.min(MAX_HEIGHT, Math.max(this.reserved(), Math.ceil(content) + 4 + 2 * MARGIN));
    el.classList.toggle("scrolls", wanted >= MAX_HEIGHT);
    if (wanted === this.height) return;
    this.height = wanted;
    const size = this.node.computeSize?.();
    if (size && this.node.size && size[1] > this.node.size[1]) this.node.setSize([this.node.size[0], size[1]]);
    this.node.setDirtyCanvas?.(true, true);
  }
}

let measure = null;
function estimateLines(text, width) {
  measure ??= document.createElement("canvas").getContext("2d");
  measure.font = "11px sans-serif";
  let n = 0;
  for (const paragraph of String(text).split("\n")) {
    let line = 0;
    n += 1;
    for (const word of paragraph.split(" ")) {
      const w = measure.measureText(word + " ").width;
      if (line + w > width && line > 0) {
        n += 1;
        line = w;
      } else {
        line += w;
      }
    }
  }
  return n;
}

/** The node's feedback widget, made on first use (options apply then). */
export function feedback(node, options) {
  node.dreamoFeedback ??= new Feedback(node, options);
  return node.dreamoFeedback;
}
