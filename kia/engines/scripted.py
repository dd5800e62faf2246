"""A scripted fake engine for unit tests of the logic around the model (never a feature's only test).

It answers the last question in each prompt from a script: a fixed answer, a list cycled through
call by call, or a function of (question, call index, sample index).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kia.engines.interface import Prompt, Sampling

Script = str | Sequence[str] | Callable[[str, int, int], str]


class ScriptedEngine:
    name = "scripted"

    def __init__(self, script: dict[str, Script], default: str = "I don't know.", *, chat_template: bool = True):
        self.script = script
        self.default = default
        self.model_id = "scripted"
        self.has_adapter = False
        self.chat_template = chat_template
        self.calls: dict[str, int] = {}
        self.n_generated = 0

    @property
    def bos(self) -> str:
        return ""

    def chat(self, messages: Sequence[dict[str, str]]) -> str | None:
        if not self.chat_template:
            return None
        return "".join(m["content"] + "\n" for m in messages)

    def close(self) -> None:
        pass

    def _question(self, prompt: Prompt | str) -> str:
        text = prompt.text if isinstance(prompt, Prompt) else prompt
        last = text.rstrip("\n").rsplit("\n", 1)[-1]
        if last == "A:":
            last = text.rstrip("\n").rsplit("\n", 2)[-2]
        return last.split(": ", 1)[1] if ": " in last else last

    def generate(
        self, prompts: Sequence[Prompt | str], sampling: Sampling, *, adapter: bool = False
    ) -> list[list[str]]:
        out = []
        for p in prompts:
            q = self._question(p)
            call = self.calls.get(q, 0)
            self.calls[q] = call + 1
            rule = self.script.get(q, self.default)
            answers = []
            for k in range(sampling.n):
                if callable(rule):
                    text = rule(q, call, k)
                elif isinstance(rule, str):
                    text = rule
                else:
                    text = rule[(call * sampling.n + k) % len(rule)]
                answers.append(f"Answer: {text}")
            self.n_generated += sampling.n
            out.append(answers)
        return out
