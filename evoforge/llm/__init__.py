"""Chat models for the agents: OpenAI-compatible endpoints, the embedded local model, scripted replays."""

from evoforge.llm.local import LOCAL_MODELS, LocalModelServer, ensure_model_file, stop_all_servers
from evoforge.llm.models import clear_model_cache, make_chat_model, models_dir
from evoforge.llm.scripted import ScriptedChatModel, ScriptedProviderError
from evoforge.llm.usage import LLMCallError, Usage, call_model, estimate_tokens

__all__ = [
    "LOCAL_MODELS",
    "LLMCallError",
    "LocalModelServer",
    "ScriptedChatModel",
    "ScriptedProviderError",
    "Usage",
    "call_model",
    "clear_model_cache",
    "ensure_model_file",
    "estimate_tokens",
    "make_chat_model",
    "models_dir",
    "stop_all_servers",
]
