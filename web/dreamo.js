// DreamO for ComfyUI: what the pack's nodes have to say, inside the node (web/feedback.js), before and after a run.
// - DreamO Reference Encode: what it encoded (and the face it found), small, with the `dreamo_info` text it returns
//   (background removal, face alignment, resize, fallbacks), and "outdated" when its picture or settings changed
//   since.
// - DreamO Apply / DreamO Text Encode: a thumbnail of the reference in each slot, as Reference Encode prepared it
//   (dimmed and marked "outdated" when that preview is), and their own notes after a run.
// - Before queueing, on the canvas: DreamO Text Encode and the DreamO Apply it feeds meaning different pictures by
//   the same slot (a reference connected to DreamO Apply only is enough), and DreamO Routing regions for slots
//   without a reference on the DreamO Apply of its model.
// Nothing is stored in the nodes' inputs: saved workflows and prompts are the same as without this extension.
import { app } from "../../scripts/app.js";
import { connectedSlots, getLink } from "./growing_inputs.js";
import { APPLY_NODE, REFERENCE_NODE, REF_PREFIX, REGIONAL_NODE, ROUTING_NODE, TEXT_NODE, appliesOfText,
         downstream, modelChainSlots, referenceOrigins, upstreamSignature } from "./dreamo_nodes.js";
import { feedback, viewUrl } from "./feedback.js";

const INFO_KEY = "dreamo_info"; // the `ui` keys the Python nodes return
const PREVIEWS_KEY = "dreamo_previews"; // DreamO Reference Encode: what it encoded, then the faces it found
export const FEEDBACK = {
  [REFERENCE_NODE]: { reserveLines: 2, thumbnails: true },
  [APPLY_NODE]: { reserveLines: 1, thumbnails: true },
  [TEXT_NODE]: { reserveLines: 2, thumbnails: true },
  [ROUTING_NODE]: { reserveLines: 1 },
};
const REFRESH_MS = 400;

function infoLines(text) {
  return String(text ?? "").split("\n").filter(Boolean).map((line) => ({
    kind: /\bkept\b|fell back|lacks/.test(line) ? "warn" : "info", text: line }));
}

/** Is the preview a DreamO Reference Encode shows older than its inputs? */
export function previewIsStale(refNode) {
  return Boolean(refNode?.dreamoPreview) && refNode.dreamoPreview.signature !== upstreamSignature(refNode);
}

/** {slot: reference node} the thumbnails and checks of a node taking references use: its own, or for a DreamO
 *  Text Encode without any, those of the DreamO Apply it feeds. */
export function shownReferences(node) {
  const own = referenceOrigins(node);
  if (node.type !== TEXT_NODE || Object.keys(own).length) return own;
  return applyReferences(node);
}

/** {slot: reference node} of every DreamO Apply along a DreamO Text Encode's conditioning (chained ones too). */
export function applyReferences(textNode) {
  const out = {};
  const applies = downstream(textNode, "CONDITIONING", 6).filter(({ node, input }) =>
    node.type === APPLY_NODE && input === "positive").map(({ node }) => node);
  for (const a of applies) Object.assign(out, referenceOrigins(a));
  return out;
}

function thumbnails(node) {
  return Object.entries(shownReferences(node)).map(([slot, origin]) => {
    const preview = origin?.type === REFERENCE_NODE ? origin.dreamoPreview : null;
    const stale = preview ? previewIsStale(origin) : false;
    return { slot: Number(slot), src: preview?.url ?? null, stale,
             title: !preview ? `ref_${slot}: run to see the prepared reference`
               : stale ? `ref_${slot}: the reference changed since this preview; run again` : `ref_${slot}` };
  });
}

/** Text Encode's references against those of the Apply nodes it feeds: [{slot, text}] for each slot they differ. */
export function slotDisagreements(textNode) {
  const own = referenceOrigins(textNode);
  if (!Object.keys(own).length) return [];
  const applied = applyReferences(textNode);
  if (!appliesOfText(textNode).length) return [];
  const out = [];
  const slots = [...new Set([...Object.keys(own), ...Object.keys(applied)].map(Number))].sort((a, b) => a - b);
  for (const slot of slots) {
    const mine = own[slot], theirs = applied[slot];
    if (mine?.id === theirs?.id) continue;
    let text;
    if (!theirs) text = `ref_${slot} is connected here but not on DreamO Apply`;
    else if (!mine) text = `DreamO Apply has a reference in ref_${slot} that is not connected here`;
    else {
      const swapped = Object.entries(applied).find(([k, n]) => Number(k) !== slot && n?.id === mine.id);
      text = `ref_${slot} here is not DreamO Apply's ref_${slot}` +
        (swapped ? ` (Apply has it in ref_${swapped[0]}: swapped?)` : "");
    }
    out.push({ slot, text });
  }
  return out;
}

const MISMATCH_FIX = "connect the same reference to the same ref_k on both nodes, or disconnect the references " +
  "from DreamO Text Encode (connected to DreamO Apply only is enough)";

function refreshText(node) {
  const fb = feedback(node);
  fb.setThumbs(thumbnails(node));
  const problems = slotDisagreements(node);
  fb.set("slots", problems.length ? [{ kind: "error", text: `${problems.map((p) => p.text).join("; ")}: ${MISMATCH_FIX}.` }] : null);
}

function refreshApply(node) {
  const fb = feedback(node);
  fb.setThumbs(thumbnails(node));
  const texts = downstreamTexts(node);
  const problems = texts.flatMap((t) => slotDisagreements(t));
  fb.set("slots", problems.length ? [{ kind: "error", text: `DreamO Text Encode disagrees: ${problems.map((p) => p.text).join("; ")}: ${MISMATCH_FIX}.` }] : null);
}

/** The DreamO Text Encode nodes whose conditioning reaches this DreamO Apply's positive. */
function downstreamTexts(applyNode) {
  const out = [];
  for (const n of applyNode.graph?._nodes ?? []) {
    if (n.type === TEXT_NODE && appliesOfText(n).includes(applyNode)) out.push(n);
  }
  return out;
}

function refreshReference(node) {
  const fb = feedback(node);
  const stale = previewIsStale(node);
  const urls = node.dreamoPreview?.urls ?? [];
  fb.setThumbs(urls.map((src, i) => ({ label: i === 0 ? "encoded" : "face found", src, stale,
                                       title: i === 0 ? "what DreamO encodes (the node's preview output)" : "" })));
  fb.set("stale", stale ? [{ kind: "warn", text: "outdated: the picture or settings changed since this preview; run again" }] : null);
}

/** The slots DreamO Routing has a region for: drawn boxes and connected region_k masks. */
export function regionSlots(node) {
  const slots = new Set(connectedSlots(node, "region_"));
  for (const k of Object.keys(storedRegions(node).boxes ?? {})) if (/^[1-9]$/.test(k)) slots.add(Number(k));
  return [...slots].sort((a, b) => a - b);
}

/** The slots whose region has words (regional prompts: such a region needs no reference). */
export function wordedSlots(node) {
  const texts = storedRegions(node).texts ?? {};
  return Object.keys(texts).filter((k) => /^[1-9]$/.test(k) && typeof texts[k] === "string" && texts[k].trim())
    .map(Number);
}

function storedRegions(node) {
  const text = node.widgets?.find((w) => w.name === "drawn_regions")?.value;
  try {
    const data = text ? JSON.parse(text) : null;
    return data && typeof data === "object" ? data : {};
  } catch {
    return {}; // the node reports unreadable text itself when it runs
  }
}

function refreshRouting(node) {
  const have = modelChainSlots(node);
  const fb = feedback(node);
  // DreamO Regional Conditioning's regions may give any slot words: the run checks those (as the node does).
  const regional = (node.graph?._nodes ?? []).some((n) => n.type === REGIONAL_NODE);
  if (have === null || regional) {
    fb.set("slots", null);
    return;
  }
  const masks = new Set(connectedSlots(node, "region_"));
  const worded = wordedSlots(node);
  const lines = regionSlots(node).filter((k) => !have.includes(k) && !worded.includes(k)).map((k) => ({
    kind: "warn",
    text: `slot ${k} has a region but DreamO Apply has no reference in ref_${k}: connect one, or ` +
      (masks.has(k) ? `disconnect region_${k}` : `clear slot ${k}'s box`) + " (the run would stop here)",
  }));
  fb.set("slots", lines);
}

const REFRESH = { [REFERENCE_NODE]: refreshReference, [APPLY_NODE]: refreshApply, [TEXT_NODE]: refreshText,
                  [ROUTING_NODE]: refreshRouting };

function refreshAll() {
  for (const node of app.graph?._nodes ?? []) {
    const refresh = REFRESH[node.type];
    // Not while the region editor drags: new lines would grow the feedback above it and move the preview under
    // the mouse (a box drawn for an empty slot came out 19 px short); the first refresh after the release adds them.
    if (refresh && node.dreamoFeedback && !node.dreamoRegionEditor?.drag) {
      try {
        refresh(node);
        node.dreamoFeedback.fit(); // the text wraps anew when the node is resized
      } catch (e) {
        console.warn("DreamO feedback:", e);
      }
    }
  }
}

let driver = null;

app.registerExtension({
  name: "DreamO.ReferenceInfo",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const name = nodeData?.name;
    const options = FEEDBACK[name];
    if (!options) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      feedback(this, options);
      driver ??= setInterval(refreshAll, REFRESH_MS);
      return r;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (INFO_KEY in (message ?? {})) feedback(this, options).set("info", infoLines((message[INFO_KEY] ?? []).join("\n")));
      const shown = message?.[PREVIEWS_KEY];
      if (name === REFERENCE_NODE && shown?.length) {
        const urls = shown.map(viewUrl);
        this.dreamoPreview = { url: urls[0], urls, signature: upstreamSignature(this) };
      }
      refreshAll();
    };
  },
});
