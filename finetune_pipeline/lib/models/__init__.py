"""Base models: resolving a spec to local safetensors (embedded, tiny-random, local, hub), loading them
safely (safetensors only, remote code only when allowed), and merging an adapter into its base."""
