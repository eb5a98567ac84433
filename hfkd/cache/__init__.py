"""Teacher soft-label cache: run the teachers once, distil from stored outputs, share them on the Hub."""
from .format import CacheMetadata, TeacherCacheError, recover_topk_logits
from .generate import cache_teacher_outputs
from .hub import push_teacher_cache, resolve_cache
from .lookup import TeacherCache, open_teacher_cache, verify_teacher_cache

__all__ = ["CacheMetadata", "TeacherCacheError", "recover_topk_logits", "cache_teacher_outputs", "push_teacher_cache",
           "resolve_cache", "TeacherCache", "open_teacher_cache", "verify_teacher_cache"]
