"""mnsched's benchmark: the same workloads under plain asyncio, uvloop and mnsched."""
