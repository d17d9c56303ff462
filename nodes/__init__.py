"""The pack's nodes: the single list of node ids and display names."""
from .apply import DreamOApply
from .loader import DreamOLoader
from .model_folders import register_all
from .node_ids_route import register_node_ids_route
from .preprocess import DreamOPreprocessorLoader
from .prompt_check_route import register_routes
from .ref_encode import DreamORefEncode
from .regional import DreamORegionalConditioning
from .routing import DreamORouting, DreamORoutingMap
from .stage_loader import DreamOStageLoader
from .text_encode import DreamOTextEncode
from .version_guard import guard, running_comfyui_version

NODES = guard((DreamOLoader, DreamOStageLoader, DreamOPreprocessorLoader, DreamORefEncode, DreamOTextEncode,
               DreamOApply, DreamORouting, DreamORoutingMap, DreamORegionalConditioning), running_comfyui_version())

FRONTEND_ROLES = {"reference": DreamORefEncode, "apply": DreamOApply, "text": DreamOTextEncode,
                  "routing": DreamORouting, "regional": DreamORegionalConditioning}
"""The nodes web/ refers to, by the role it knows them by (GET /dreamo/node_ids, web/node_ids.js)."""

register_all()
register_routes()
register_node_ids_route(FRONTEND_ROLES)

NODE_CLASS_MAPPINGS = {n.NODE_ID: n for n in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {n.NODE_ID: n.DISPLAY_NAME for n in NODES}
