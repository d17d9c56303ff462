"""The pack's frontend (web/) in the real ComfyUI frontend, in headless Debian Chromium, against a real server.

Growing reference sockets (connected with the mouse on the canvas), a saved-then-reloaded workflow keeping its
links and slots, the same workflow loaded and queued without the extension, the placeholder-aware prompt box
(highlight, `[` completion, empty-slot and near-miss marks with the node's own words), and the reference
thumbnails after a run. Screenshots go to $DREAMO_ARTIFACTS (default: pytest's tmp folder), never the repo.
The graph needs no Flux model, so it runs on every ComfyUI release the tiny text encoders run on.
"""
import os

import pytest
import requests

from dreamo_testkit.browser import inside, page_without, vue_nodes_page

pytestmark = [pytest.mark.host, pytest.mark.server]

EXTENSIONS = ["DreamO.GrowingInputs", "DreamO.PromptBox", "DreamO.ReferenceInfo", "DreamO.RegionEditor",
              "DreamO.RegionWords", "DreamO.WidgetRules"]


def graph():
    """API workflow: two references, DreamO Text Encode with a STRING sink, and a DreamO Apply (not run)."""
    def ref(task, resolution):
        return {"class_type": "DreamORefEncode", "inputs": {"image": ["4", 0], "vae": ["2", 0], "task": task,
                                                            "resolution": resolution, "id_fallback": "ip"}}
    return {
        "2": {"class_type": "DreamOTestTinyVAE", "inputs": {"seed": 2}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "reference.png"}},
        "5": ref("ip", 64),
        "15": ref("style", 64),
        "16": {"class_type": "DreamOTestTinyFluxCLIP", "inputs": {"seed": 5}},
        "18": {"class_type": "DreamOLoader", "inputs": {"dreamo_file": "dreamo_tiny.safetensors"}},
        "6": {"class_type": "DreamOTextEncode", "inputs": {
            "clip": ["16", 0], "dreamo": ["18", 0], "text": "the bottle [ref#1]", "t5_length": "512",
            "add_style_instruction": True, "ref_1": ["5", 0]}},
        "30": {"class_type": "PreviewAny", "inputs": {"source": ["6", 1]}},
        "8": {"class_type": "DreamOApply", "inputs": {"dreamo": ["18", 0], "ref_1": ["5", 0]}},
    }


def arrange(page):
    """Place the nodes where the mouse can reach every socket at scale 1."""
    page.js("""() => {
        const at = {4: [20, 40], 2: [20, 420], 5: [340, 40], 15: [340, 470], 16: [20, 780], 18: [20, 620],
                    6: [700, 40], 8: [700, 520], 30: [1150, 40]};
        for (const [id, pos] of Object.entries(at)) app.graph.getNodeById(+id).pos = pos;
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty(true, true); }""")
    page.settle(300)


def test_the_node_ids_reach_the_page_from_the_server(page, server):
    """web/node_ids.js holds what the server says, and the modules key their nodes by it."""
    from comfyui_dreamo.nodes import FRONTEND_ROLES

    ids = {role: cls.NODE_ID for role, cls in FRONTEND_ROLES.items()}
    seen = page.js("""async () => {
        const url = (await (await fetch('api/extensions')).json()).find((u) => u.endsWith('/node_ids.js'));
        const base = url.slice(0, -'node_ids.js'.length);
        const { NODE_IDS } = await import(url);
        const { GROWING_INPUTS } = await import(base + 'growing_inputs.js');
        const { FEEDBACK } = await import(base + 'dreamo.js');
        return { ids: { ...NODE_IDS }, growing: Object.keys(GROWING_INPUTS).sort(),
                 feedback: Object.keys(FEEDBACK).sort() };
    }""")
    assert seen["ids"] == ids
    assert seen["growing"] == sorted([ids["apply"], ids["text"], ids["routing"]])
    assert seen["feedback"] == sorted([ids["reference"], ids["apply"], ids["text"], ids["routing"]])


def test_extension_loads_and_sockets_grow_and_shrink_as_references_connect(page, artifacts):
    assert sorted(page.js("() => app.extensions.map(e => e.name).filter(n => n.startsWith('DreamO.'))")) == EXTENSIONS
    page.load_api(graph())
    arrange(page)
    # One free socket after the last connected one, on both nodes that take references.
    assert page.inputs(8) == ["model", "positive", "dreamo*", "ref_1*", "ref_2"]
    assert page.inputs(6) == ["clip*", "dreamo*", "ref_1*", "ref_2"]
    page.show([4, 6, 8], os.path.join(artifacts, "sockets_1_connected.png"))

    page.drag_link(15, "reference", 8, "ref_2")  # with the mouse, as a user does
    assert page.inputs(8) == ["model", "positive", "dreamo*", "ref_1*", "ref_2*", "ref_3"]
    page.drag_link(5, "reference", 8, "ref_3")
    assert page.inputs(8) == ["model", "positive", "dreamo*", "ref_1*", "ref_2*", "ref_3*", "ref_4"]
    page.show([4, 6, 8], os.path.join(artifacts, "sockets_3_connected.png"))

    # Disconnecting a middle slot keeps the numbering (ref_3 stays slot 3); the last one shrinks the node.
    page.js("() => { const n = app.graph.getNodeById(8); n.disconnectInput(n.findInputSlot('ref_2')); }")
    page.settle()
    assert page.inputs(8) == ["model", "positive", "dreamo*", "ref_1*", "ref_2", "ref_3*", "ref_4"]
    assert page.origins(8)["ref_3"] == ["5", 0, "ref_3"]
    page.js("() => { const n = app.graph.getNodeById(8); n.disconnectInput(n.findInputSlot('ref_3')); }")
    page.settle()
    assert page.inputs(8) == ["model", "positive", "dreamo*", "ref_1*", "ref_2"]

    # A link dragged onto the free socket of the text encoder grows it too; widgets stay after the sockets.
    page.drag_link(15, "reference", 6, "ref_2")
    assert page.inputs(6) == ["clip*", "dreamo*", "ref_1*", "ref_2*", "ref_3"]
    names = page.js("() => app.graph.getNodeById(6).inputs.map(i => i.name)")
    assert names[-3:] == ["text", "t5_length", "add_style_instruction"]
    assert page.origins(6)["ref_2"] == ["15", 0, "ref_2"]


def test_saved_workflow_reloads_with_its_links_and_slots_and_runs_without_the_extension(page, browser,
                                                                                         server, artifacts):
    workflow = graph()
    workflow["8"]["inputs"]["ref_3"] = ["15", 0]  # slot 3 with slot 2 empty
    workflow["6"]["inputs"].update(ref_3=["15", 0], text="the bottle [ref#1] in the style of [ref#3]")
    page.load_api(workflow)
    assert page.inputs(8) == ["model", "positive", "dreamo*", "ref_1*", "ref_2", "ref_3*", "ref_4"]
    prompt = page.prompt()
    # The canvas queues exactly the API workflow (Apply included: it is not run here, no output needs it).
    # PreviewAny's own display widget is left out: older frontends queue it as an input.
    assert {k: (v["class_type"], v["inputs"]) for k, v in prompt.items() if k != "30"} == \
        {k: (v["class_type"], v["inputs"]) for k, v in workflow.items() if k != "30"}
    assert prompt["30"]["inputs"]["source"] == ["6", 1]

    saved = page.js("() => app.graph.serialize()")
    saved_inputs = {n["id"]: [i["name"] for i in n["inputs"]] for n in saved["nodes"]}
    definition = page.js("() => LiteGraph.createNode('DreamOApply').inputs.map(i => i.name)")
    assert set(saved_inputs[8]) <= set(definition)  # only the node's own inputs, nothing added
    origins = {8: page.origins(8), 6: page.origins(6)}

    page.js("async (wf) => { app.graph.clear(); await app.loadGraphData(wf); }", saved)
    page.settle()
    assert page.inputs(8) == ["model", "positive", "dreamo*", "ref_1*", "ref_2", "ref_3*", "ref_4"]
    assert {8: page.origins(8), 6: page.origins(6)} == origins
    assert page.prompt() == prompt
    page.show([4, 6, 8], os.path.join(artifacts, "reloaded.png"))

    # The same file in a frontend without the extension: every input back, same links, same prompt.
    with page_without(browser, server, EXTENSIONS, saved) as bare:
        assert bare.inputs(8) == ["model", "positive", "dreamo*", "ref_1*", "ref_2", "ref_3*"] + \
            [f"ref_{i}" for i in range(4, 10)]
        assert {8: bare.origins(8), 6: bare.origins(6)} == origins
        assert bare.prompt() == prompt

    # And it runs: through the API without any frontend (the Apply branch has no output and is skipped).
    result = server.run(prompt, timeout=300)
    assert result["status"] == "success", result["error"]
    assert "generate a same style image." in result["outputs"]["6"]["dreamo_info"][0]


def text_box(page, node_id=6):
    return page.page.locator("textarea.comfy-multiline-input").nth(
        page.js("""(id) => [...document.querySelectorAll('textarea.comfy-multiline-input')]
                           .indexOf(app.graph.getNodeById(id).widgets.find(w => w.name === 'text').element)""",
                node_id))


def wait_for_check(page, text):
    page.page.wait_for_function("""(text) => { const n = app.graph.getNodeById(6);
        return n.dreamoPromptCheck !== undefined && n.dreamoPromptBox.checkedKey
               && JSON.parse(n.dreamoPromptBox.checkedKey)[0] === text; }""", arg=text, timeout=10000)
    return page.js("() => app.graph.getNodeById(6).dreamoPromptCheck")


def marks(page):
    return page.js("""() => [...app.graph.getNodeById(6).dreamoPromptBox.overlay.querySelectorAll('span')]
                            .map(s => [s.dataset.kind, s.textContent])""")


def test_prompt_box_highlights_completes_and_marks_problems_with_the_nodes_words(page, server, artifacts):
    workflow = graph()
    workflow["6"]["inputs"]["ref_3"] = ["15", 0]
    workflow["6"]["inputs"]["text"] = ""
    page.load_api(workflow)
    arrange(page)
    box = text_box(page)
    box.click()
    page.page.keyboard.type("a photo of the bottle [")
    menu = page.page.locator(".dreamo-placeholder-menu")
    menu.wait_for(state="visible", timeout=5000)
    assert menu.locator("[data-choice]").all_inner_texts() == ["[ref#1]", "[ref#3]", "[res]"]
    page.page.keyboard.type("ref#")
    assert menu.locator("[data-choice]").all_inner_texts() == ["[ref#1]", "[ref#3]"]
    page.page.screenshot(path=os.path.join(artifacts, "prompt_completion.png"))
    page.page.keyboard.press("Enter")
    page.page.keyboard.type(" painted like [")
    page.page.keyboard.press("ArrowDown")
    page.page.keyboard.press("Tab")
    text = "a photo of the bottle [ref#1] painted like [ref#3]"
    assert box.input_value() == text
    assert page.js("() => app.graph.getNodeById(6).widgets.find(w => w.name === 'text').value") == text
    check = wait_for_check(page, text)
    assert check["error"] is None
    assert marks(page) == [["placeholder", "[ref#1]"], ["placeholder", "[ref#3]"]]

    page.page.keyboard.type(" next to [ref#2], [REF#1] and [ref 1]")
    text += " next to [ref#2], [REF#1] and [ref 1]"
    check = wait_for_check(page, text)
    assert marks(page) == [["placeholder", "[ref#1]"], ["placeholder", "[ref#3]"], ["empty_slot", "[ref#2]"],
                           ["near_miss", "[REF#1]"], ["near_miss", "[ref 1]"]]
    assert "'[REF#1]' at character" in check["error"] and "did you mean [ref#1]?" in check["error"]
    # Every marked problem is in the one error, shown inside the node: the near misses and the empty slot.
    assert "the prompt has 2 problems: (1)" in check["error"]
    assert "(2) the prompt names [ref#2] but there is no reference in ref_2" in check["error"]
    assert feedback(page, 6)["lines"][0] == ["error", check["error"]]
    page.show([6], os.path.join(artifacts, "prompt_near_miss.png"))
    # Queued, the node stops with exactly the words shown in the editor.
    result = server.run(page.prompt(), timeout=300)
    assert result["status"] == "error" and result["error"]["node_type"] == "DreamOTextEncode"
    assert result["error"]["exception_message"].strip() == check["error"]

    box.fill("a photo of the bottle [ref#1] next to [ref#2]")
    check = wait_for_check(page, "a photo of the bottle [ref#1] next to [ref#2]")
    assert marks(page) == [["placeholder", "[ref#1]"], ["empty_slot", "[ref#2]"]]
    assert "there is no reference in ref_2" in check["error"]
    page.show([6], os.path.join(artifacts, "prompt_empty_slot.png"))
    result = server.run(page.prompt(), timeout=300)
    assert result["status"] == "error"
    assert result["error"]["exception_message"].strip() == check["error"]

    # Connecting ref_2 answers the mark without touching the text.
    page.drag_link(15, "reference", 6, "ref_2")
    check = wait_for_check(page, "a photo of the bottle [ref#1] next to [ref#2]")
    page.page.wait_for_function("() => app.graph.getNodeById(6).dreamoPromptCheck?.error === null", timeout=10000)
    assert marks(page) == [["placeholder", "[ref#1]"], ["placeholder", "[ref#2]"]]


def feedback(page, node_id):
    """What a DreamO node shows in its feedback widget: the lines (kind, text) and the pictures (label, stale)."""
    return page.js("""(id) => { const el = app.graph.getNodeById(id).dreamoFeedback?.element;
        if (!el) return null;
        return { lines: [...el.querySelectorAll('[data-kind]')].map(d => [d.dataset.kind, d.textContent]),
                 pictures: [...el.querySelectorAll('figure')].map(f => [f.querySelector('span').textContent,
                     f.classList.contains('stale'), f.querySelector('img')?.naturalWidth ?? 0,
                     f.querySelector('img')?.naturalHeight ?? 0]) }; }""", node_id)


def wait_for_pictures(page, node_ids, count=1):
    page.page.wait_for_function("""([ids, n]) => ids.every(id => { const el = app.graph.getNodeById(id).dreamoFeedback
        ?.element; return el && [...el.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth).length >= n; })""",
                                arg=[node_ids, count], timeout=120000)


def test_reference_previews_are_shown_on_their_nodes_after_a_run(page, artifacts):
    workflow = graph()
    workflow["5"]["inputs"]["resolution"] = 80  # unique on the shared server (e2e uses 144): not cached
    workflow["15"]["inputs"]["resolution"] = 96
    workflow["8"]["inputs"]["ref_3"] = ["15", 0]
    workflow["6"]["inputs"].update(ref_3=["15", 0], text="the bottle [ref#1] in the style of [ref#3]")
    page.load_api(workflow)
    arrange(page)
    # Before the run: each slot is named, with no picture yet.
    assert feedback(page, 8)["pictures"] == [["ref_1", False, 0, 0], ["ref_3", False, 0, 0]]
    page.js("async () => { await app.queuePrompt(0, 1); }")
    wait_for_pictures(page, [5, 15, 6, 8])
    # The reference nodes show, small, exactly what was encoded; Apply and Text Encode one picture per slot.
    shown = {i: feedback(page, i)["pictures"] for i in (5, 15, 6, 8)}
    assert shown[15] == [["encoded", False, 96, 96]]
    label, stale, w, h = shown[5][0]
    assert label == "encoded" and not stale and abs(w * h - 80 * 80) <= 80 * 16
    for node in (6, 8):
        assert shown[node] == [["ref_1", False, w, h], ["ref_3", False, 96, 96]]
    # Not ComfyUI's large image preview, which grew the node into its neighbours.
    assert page.js("() => (app.graph.getNodeById(5).imgs ?? []).length") == 0
    page.page.wait_for_function("() => app.graph.getNodeById(6).dreamoFeedback.get('info').length", timeout=120000)
    info = " ".join(t for _, t in feedback(page, 6)["lines"])
    assert "generate a same style image." in info
    page.show([5, 6, 8], os.path.join(artifacts, "reference_previews.png"))

    # A changed setting makes the shown pictures outdated, on the reference node and wherever they are shown.
    page.js("""() => { const w = app.graph.getNodeById(15).widgets.find(w => w.name === 'resolution');
                       w.value = 112; w.callback?.(w.value); }""")
    page.page.wait_for_function("() => app.graph.getNodeById(15).dreamoFeedback.get('stale').length", timeout=10000)
    assert feedback(page, 15)["pictures"][0][1] is True
    assert ["warn", "outdated: the picture or settings changed since this preview; run again"] in \
        feedback(page, 15)["lines"]
    page.page.wait_for_function("() => app.graph.getNodeById(8).dreamoFeedback.element"
                                ".querySelector('figure[data-slot=\"3\"]').classList.contains('stale')", timeout=10000)
    assert [p[1] for p in feedback(page, 8)["pictures"]] == [False, True]
    assert [p[1] for p in feedback(page, 5)["pictures"]] == [False]
    page.show([5, 15, 6, 8], os.path.join(artifacts, "reference_previews_outdated.png"))
    page.js("""() => { const w = app.graph.getNodeById(15).widgets.find(w => w.name === 'resolution');
                       w.value = 96; w.callback?.(w.value); }""")  # back as it ran: current again
    page.page.wait_for_function("() => !app.graph.getNodeById(15).dreamoFeedback.get('stale').length", timeout=10000)


def test_text_encode_and_apply_disagreeing_is_flagged_and_apply_alone_is_enough(page, artifacts):
    """Swapping two references on DreamO Apply only is marked on both nodes before anything is queued; with the
    references on DreamO Apply alone, the prompt is checked against Apply's and Text Encode shows Apply's pictures."""
    workflow = graph()
    workflow["6"]["inputs"].update(ref_3=["15", 0], text="the bottle [ref#1] in the style of [ref#3]")
    workflow["8"]["inputs"].update(ref_1=["15", 0], ref_3=["5", 0])  # swapped on Apply only
    workflow["31"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["6", 0], "guidance": 4.5}}
    workflow["8"]["inputs"]["positive"] = ["31", 0]  # through FluxGuidance, as in the templates
    page.load_api(workflow)
    arrange(page)
    page.js("() => { app.graph.getNodeById(31).pos = [700, 420]; }")
    swapped = "ref_1 here is not DreamO Apply's ref_1 (Apply has it in ref_3: swapped?)"
    page.page.wait_for_function("(t) => app.graph.getNodeById(6).dreamoFeedback.get('slots')[0]?.text.includes(t)",
                                arg=swapped, timeout=10000)
    kind, text = feedback(page, 6)["lines"][0]
    assert kind == "error" and "connected to DreamO Apply only is enough" in text
    apply_lines = feedback(page, 8)["lines"]
    assert apply_lines and apply_lines[0][0] == "error" and swapped in apply_lines[0][1]
    page.show([6, 8, 31], os.path.join(artifacts, "text_encode_apply_disagree.png"))

    # Connected once, to Apply: nothing to disagree; the prompt is checked against Apply's slots 1 and 3.
    page.js("""() => { const n = app.graph.getNodeById(6);
        for (const k of ['ref_1', 'ref_3']) n.disconnectInput(n.findInputSlot(k)); }""")
    page.page.wait_for_function("() => !app.graph.getNodeById(6).dreamoFeedback.get('slots').length"
                                " && !app.graph.getNodeById(8).dreamoFeedback.get('slots').length", timeout=10000)
    assert page.inputs(6) == ["clip*", "dreamo*", "ref_1"]
    page.page.wait_for_function("""() => { const b = app.graph.getNodeById(6).dreamoPromptBox;
        return b.checkedKey && JSON.stringify(JSON.parse(b.checkedKey)[1]) === '{"1":"style","3":"ip"}'; }""",
                                timeout=10000)  # checked against Apply's references now
    assert page.js("() => app.graph.getNodeById(6).dreamoPromptCheck.error") is None
    assert [p[0] for p in feedback(page, 6)["pictures"]] == ["ref_1", "ref_3"]  # Apply's references, shown here
    # Apply's ref_1 (a style reference) is one Text Encode never saw: it cannot add the instruction, and says so.
    assert any(k == "warn" and "ref_1 is a style reference but the prompt lacks" in t for k, t in feedback(page, 6)["lines"])
    page.js("() => { const n = app.graph.getNodeById(8); n.disconnectInput(n.findInputSlot('ref_3')); }")
    page.page.wait_for_function("() => app.graph.getNodeById(6).dreamoPromptCheck?.error", timeout=10000)
    check = page.js("() => app.graph.getNodeById(6).dreamoPromptCheck")
    assert "there is no reference in ref_3; references are connected to ref_1" in check["error"]
    assert feedback(page, 6)["lines"][0] == ["error", check["error"]]
    assert marks(page) == [["placeholder", "[ref#1]"], ["empty_slot", "[ref#3]"]]
    page.show([6, 8, 31], os.path.join(artifacts, "text_encode_checked_against_apply.png"))


def test_new_nodes_show_the_widgets_that_apply_at_a_readable_size(page, artifacts):
    """Stage loader: the stages the version and turbo switch use; DreamO Routing: strength in soft mode only;
    strengths fold away until "Show Advanced". Titles fit, the prompt box has room. Hidden widgets keep their values:
    the queued inputs are the node's defaults, every one of them."""
    page.js("""() => { app.graph.clear(); let x = 20;
        for (const type of ['DreamOStageLoader', 'DreamORouting', 'DreamOApply', 'DreamOTextEncode', 'DreamORefEncode',
                            'CLIPTextEncode']) {
            const n = LiteGraph.createNode(type); n.pos = [x, 40]; app.graph.add(n); x += n.size[0] + 30; }
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty(true, true); }""")
    page.settle(500)
    shown = """(type) => app.graph._nodes.find(n => n.type === type).widgets.filter(w => !w.hidden && w.type !==
                   'dreamo_feedback' && !w.name.startsWith('$$')).map(w => w.name)"""
    choose = """([type, name, value]) => { const n = app.graph._nodes.find(n => n.type === type);
        const w = n.widgets.find(w => w.name === name); w.value = value; w.callback?.(value);
        return Math.round(n.size[1]); }"""
    stages = ["dreamo_file", "version", "cfg_distill_file", "turbo", "turbo_file", "sft_file", "dpo_file"]
    assert page.js(shown, "DreamOStageLoader") == stages
    h_v11 = page.js("() => app.graph._nodes.find(n => n.type === 'DreamOStageLoader').size[1]")
    page.js(choose, ["DreamOStageLoader", "version", "v1"])
    assert page.js(shown, "DreamOStageLoader") == ["dreamo_file", "version", "cfg_distill_file", "turbo", "turbo_file",
                                                   "quality_pos_file", "quality_neg_file"]
    h_turbo_off = page.js(choose, ["DreamOStageLoader", "turbo", False])
    assert "turbo_file" not in page.js(shown, "DreamOStageLoader") and h_turbo_off < h_v11
    page.js("() => app.graph._nodes.find(n => n.type === 'DreamOStageLoader').toggleAdvanced()")  # "Show Advanced"
    assert page.js(shown, "DreamOStageLoader") == ["dreamo_file", "version", "main_strength", "cfg_distill_file",
                                                   "cfg_distill_strength", "turbo", "quality_pos_file",
                                                   "quality_pos_strength", "quality_neg_file", "quality_neg_strength",
                                                   "embedding_file"]
    page.js(choose, ["DreamOStageLoader", "version", "custom"])
    assert {"sft_file", "dpo_file", "quality_pos_file"} <= set(page.js(shown, "DreamOStageLoader"))
    page.js(choose, ["DreamOStageLoader", "version", "v1.1"])
    page.js(choose, ["DreamOStageLoader", "turbo", True])
    assert "strength" not in page.js(shown, "DreamORouting")
    page.js(choose, ["DreamORouting", "mode", "soft"])
    assert "strength" in page.js(shown, "DreamORouting")
    page.js(choose, ["DreamORouting", "mode", "hard"])
    assert "start_percent" not in page.js(shown, "DreamORouting")  # advanced, folded
    # Readable sizes: each title fits its node; the prompt box has about the room core's text box has.
    fits = page.js("""() => { const c = document.createElement('canvas').getContext('2d');
        c.font = `bold ${LiteGraph.NODE_TEXT_SIZE}px sans-serif`;
        return app.graph._nodes.map(n => [n.type, n.size[0] - c.measureText(n.title).width]); }""")
    assert all(room >= 40 for _, room in fits), fits
    boxes = page.js("""() => Object.fromEntries(app.graph._nodes.filter(n => n.type.endsWith('TextEncode')).map(n =>
        [n.type, n.widgets.find(w => w.name === 'text').element.getBoundingClientRect().height]))""")
    assert boxes["DreamOTextEncode"] >= boxes["CLIPTextEncode"] - 1, boxes  # as tall as core's prompt box
    page.page.screenshot(path=os.path.join(artifacts, "new_nodes.png"))
    # Everything hidden is still queued, at its default.
    prompt = page.prompt()
    loader = next(v["inputs"] for v in prompt.values() if v["class_type"] == "DreamOStageLoader")
    expected = requests.get(f"{page.page.url.rstrip('/')}/object_info/DreamOStageLoader", timeout=10).json()[
        "DreamOStageLoader"]["input"]["required"]
    assert set(loader) == set(expected) - {"model"}
    assert loader["quality_pos_strength"] == 0.15 and loader["turbo"] is True and loader["version"] == "v1.1"
    assert loader["turbo_strength"] == 1.0 and loader["embedding_file"] == "auto"
    routing = next(v["inputs"] for v in prompt.values() if v["class_type"] == "DreamORouting")
    assert routing["strength"] == 4.0 and routing["start_percent"] == 0.0 and routing["blocks"] == "all"


def test_prompt_check_route_answers_and_refuses_bad_requests(server):
    url = f"{server.url}/api/dreamo/check_prompt"
    ok = requests.post(url, json={"text": "a [ref#1] and [ref#3]", "references": {"1": "ip"}}, timeout=10)
    assert ok.status_code == 200
    assert "there is no reference in ref_3" in ok.json()["error"]
    assert requests.post(url, data="not json", timeout=10).status_code == 400
    bad = requests.post(url, json={"text": "a", "references": {"12": "ip"}}, timeout=10)
    assert bad.status_code == 400 and "slot 12" in bad.json()["error"]
    assert requests.get(server.url + "/system_stats", timeout=10).ok


def test_with_vue_nodes_sockets_grow_and_the_prompt_is_marked(browser, server, artifacts):
    """Frontends with the Vue node renderer ("Nodes 2.0", a setting) draw nodes and widgets as DOM components: the
    sockets grow, the prompt is marked, and what the nodes say (error, pictures, notes) shows inside them."""
    with vue_nodes_page(browser, server) as page:
        workflow = graph()
        workflow["6"]["inputs"]["text"] = "a [ref#2] and [REF#1]"
        page.load_api(workflow)
        arrange(page)
        assert page.inputs(8) == ["model", "positive", "dreamo*", "ref_1*", "ref_2"]
        page.js("() => { const a = app.graph.getNodeById(8);"
                " app.graph.getNodeById(15).connect(0, a, a.findInputSlot('ref_2')); }")
        page.settle()
        assert page.inputs(8) == ["model", "positive", "dreamo*", "ref_1*", "ref_2*", "ref_3"]
        check = wait_for_check(page, "a [ref#2] and [REF#1]")
        assert "'[REF#1]' at character 15" in check["error"]
        page.page.wait_for_function("() => document.querySelectorAll("
                                    "'[data-node-id=\"6\"] .dreamo-prompt-overlay span').length === 2",
                                    timeout=10000)
        assert marks(page) == [["empty_slot", "[ref#2]"], ["near_miss", "[REF#1]"]]
        assert page.js("() => document.querySelector('[data-node-id=\"6\"] textarea').title") == check["error"]
        # The error is shown inside the node, in its feedback widget, as in the canvas view.
        error_box = page.page.locator('[data-node-id="6"] .dreamo-feedback [data-kind="error"]')
        error_box.wait_for(state="visible", timeout=10000)
        assert error_box.inner_text().strip() == check["error"]
        inside(page, 6, error_box)
        page.page.screenshot(path=os.path.join(artifacts, "vue_nodes_prompt_error.png"))
        page.js("() => { app.graph.getNodeById(6).widgets.find(w => w.name === 'text').value = 'a [ref#1]'; }")
        page.page.wait_for_function("() => app.graph.getNodeById(6).dreamoPromptCheck?.error === null",
                                    timeout=10000)
        error_box.wait_for(state="detached", timeout=10000)
        # After a run: the pictures and notes show inside the nodes in this view too.
        page.js("async () => { await app.queuePrompt(0, 1); }")
        for node in (5, 8):
            picture = page.page.locator(f'[data-node-id="{node}"] .dreamo-feedback img').first
            page.page.wait_for_function("(id) => { const i = document.querySelector(`[data-node-id='${id}'] "
                                        ".dreamo-feedback img`); return i && i.complete && i.naturalWidth > 0; }",
                                        arg=node, timeout=120000)
            inside(page, node, picture)
        info = page.page.locator('[data-node-id="5"] .dreamo-feedback [data-kind]').first
        info.wait_for(state="visible", timeout=10000)
        inside(page, 5, info)
        # The stage loader's rules apply in this view too: no v1 quality widgets under v1.1.
        page.js("""() => { const n = LiteGraph.createNode('DreamOStageLoader'); n.pos = [1150, 420]; app.graph.add(n);
                           window.dreamoLoaderId = n.id; }""")
        page.settle(800)
        names = page.js("""() => [...document.querySelectorAll(`[data-node-id="${window.dreamoLoaderId}"] [data-widget-name],
                                   [data-node-id="${window.dreamoLoaderId}"] .lg-node-widget`)].map(e => e.textContent)""")
        text = page.js("() => document.querySelector(`[data-node-id=\"${window.dreamoLoaderId}\"]`).innerText")
        assert "sft_file" in text and "quality_pos_file" not in text and "turbo_file" in text, (names, text)
        page.page.screenshot(path=os.path.join(artifacts, "vue_nodes.png"))
