"""The child process of the `vllm` eval backend, run by the serving environment's Python.

Imports only the standard library and vllm: the serving environment has no
copy of this project. Started as `python vllm_child.py SETTINGS_JSON`, it
builds one offline `vllm.LLM` and then answers requests until its stdin closes:

    stdin  (one line per request): {"input": PATH, "output": PATH}
    input  file: {"conversations": [[{role, content}, ...], ...], "max_tokens": N, "choices": [..] | null}
    output file: {"texts": ["...", ...]}                    (same order as the conversations)
    stdout (one line per event):   {"ready": SECONDS} once, then {"done": OUTPUT_PATH} per request

All of vLLM's own logging goes to stderr (the parent keeps its tail for
errors); stdout carries only the lines above.
"""

import json
import os
import sys
import time


def _protocol_channel():
    """A private copy of stdout for the protocol; fd 1 then points at stderr, so vLLM's prints cannot mix in."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return channel


def main() -> None:
    channel = _protocol_channel()
    settings = json.loads(sys.argv[1])
    for name, value in settings.get("env", {}).items():
        os.environ[name] = str(value)  # before vllm is imported: it reads VLLM_* once
    started = time.time()
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    llm = LLM(**settings["llm"])
    channel.write(json.dumps({"ready": round(time.time() - started, 2)}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        with open(request["input"]) as f:
            job = json.load(f)
        choices = job.get("choices")
        params = SamplingParams(
            temperature=0.0, max_tokens=job["max_tokens"],
            structured_outputs=StructuredOutputsParams(choice=choices) if choices else None)
        # llm.chat applies the model's own chat template and batches all conversations internally.
        outputs = llm.chat(job["conversations"], params, use_tqdm=False)
        texts = [o.outputs[0].text.strip() for o in outputs]
        partial = request["output"] + ".partial"
        with open(partial, "w") as f:
            json.dump({"texts": texts}, f)
        os.replace(partial, request["output"])  # the parent never reads half a file
        channel.write(json.dumps({"done": request["output"]}) + "\n")


if __name__ == "__main__":
    main()
