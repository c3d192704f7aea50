"""The llava_v1 conversation and the multiple_choice_steps_beam task prompt.

Byte-for-byte copies of `labels/src/prompt.rs` (`task_prompt`, `human_turn`,
`conversation_from_prompt`); keep them in step with that file.
"""

INSTRUCTION = (
    "Answer the following multiple-choice question by reasoning step by step. Write each "
    'step as one short sentence, then finish with "Final Answer: X", where X is the letter '
    "of the correct option."
)

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions."
)

IMAGE_TOKEN = "<image>"


def letter(i: int) -> str:
    return chr(ord("A") + i % 26)


def task_prompt(question: str, choices, context=None) -> str:
    # Rust's str::trim drops Unicode White_Space; Python's str.strip() drops the same
    # set plus a few ASCII separators (\x1c-\x1f), which never occur in our data.
    lines = [INSTRUCTION]
    if context is not None:
        context = context.strip()
        if context:
            lines.append(f"Context: {context}")
    lines.append(f"Question: {question.strip()}")
    lines.append("Options:")
    for i, choice in enumerate(choices):
        lines.append(f"{letter(i)}. {choice.strip()}")
    return "\n".join(lines)


def human_turn(prompt: str, has_image: bool) -> str:
    return f"{IMAGE_TOKEN}\n{prompt}" if has_image else prompt


def conversation_from_prompt(prompt: str, has_image: bool, partial: str) -> str:
    human = human_turn(prompt, has_image)
    if partial == "":
        return f"{SYSTEM} USER: {human} ASSISTANT:"
    return f"{SYSTEM} USER: {human} ASSISTANT: {partial}"


def conversation(question: str, choices, context, has_image: bool, partial: str) -> str:
    return conversation_from_prompt(task_prompt(question, choices, context), has_image, partial)
