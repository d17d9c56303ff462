// DreamO for ComfyUI: the text DreamO Routing's region editor stores in its `drawn_regions` input, and a region's
// label. {"width": W, "height": H, "boxes": {"1": [x, y, w, h], ...}, "texts": {"1": "words", ...}} in pixels of the
// W×H preview: what dreamo_ops/drawn_regions.py reads and writes (region_editor.js draws it, region_text.js edits
// the words).

/** The text widget's value → {width, height, boxes: {slot: [x, y, w, h]}, texts: {slot: words}} (null when empty or
 *  unreadable). */
export function parseRegions(text) {
  if (typeof text !== "string" || !text.trim()) return null;
  try {
    const data = JSON.parse(text);
    if (!data || typeof data !== "object") return null;
    const boxes = {};
    for (const [k, box] of Object.entries(data.boxes ?? {})) {
      if (/^[1-9]$/.test(k) && Array.isArray(box) && box.length === 4 && box.every(Number.isFinite)) {
        boxes[Number(k)] = box.map(Number);
      }
    }
    const w = Number(data.width), h = Number(data.height);
    const out = { width: w > 0 ? w : null, height: h > 0 ? h : null, boxes };
    const texts = parseTexts(data.texts);
    if (Object.keys(texts).length) out.texts = texts; // older values: no "texts" at all
    return out;
  } catch {
    return null;
  }
}

/** The text stored for `boxes` (and each region's words, `texts`) in a width×height preview: whole pixels, slot
 *  order (as dreamo_ops/drawn_regions.dumps). */
export function formatRegions(width, height, boxes, texts = {}) {
  const out = {};
  for (const k of Object.keys(boxes).map(Number).sort((a, b) => a - b)) {
    out[String(k)] = boxes[k].map((v) => Math.round(v));
  }
  const data = { width: Math.round(width), height: Math.round(height), boxes: out };
  const words = formatTexts(texts);
  if (words) data.texts = words;
  return JSON.stringify(data);
}

/** {slot: words} of a stored "texts" object (non-string or out-of-range entries ignored). */
export function parseTexts(raw) {
  const texts = {};
  for (const [k, t] of Object.entries(raw && typeof raw === "object" ? raw : {})) {
    if (/^[1-9]$/.test(k) && typeof t === "string") texts[Number(k)] = t;
  }
  return texts;
}

/** The "texts" object written for {slot: words} (slot order, blank words dropped), or null when none. */
export function formatTexts(texts) {
  const out = {};
  for (const k of Object.keys(texts ?? {}).map(Number).sort((a, b) => a - b)) {
    if (typeof texts[k] === "string" && texts[k].trim()) out[String(k)] = texts[k];
  }
  return Object.keys(out).length ? out : null;
}

/** A box's label: its slot, and the start of its words when it has some. */
export function regionLabel(slot, texts) {
  const words = (texts?.[slot] ?? "").trim();
  return words ? `${slot}: ${words}` : `ref ${slot}`;
}
