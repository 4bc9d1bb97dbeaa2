"""Scenes for the synthetic environments: small RGB images drawn with PIL and questions about them.

Every answer is uniform over its values by construction, and the rejected answer is drawn
uniformly from the other values, so (chosen, rejected) is exchangeable: from the text alone the
content of a pair is at chance, and only the image tells which response is right.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond")
COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (235, 205, 30), "purple": (140, 60, 190), "orange": (245, 130, 30),
}
COLOR_NAMES = tuple(COLORS)
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
COUNT_WORDS = ("one", "two", "three", "four")
TASKS = ("color", "shape", "count", "position")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    quadrant: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int]
    jitter: tuple[tuple[float, float, float], ...]  # per object: dx, dy, size factor in [0, 1]


def make_scene(rng: np.random.Generator) -> Scene:
    """1-4 objects with distinct shapes, colours and quadrants; every attribute marginally uniform."""
    k = int(rng.integers(1, 5))
    shapes = rng.choice(len(SHAPES), size=k, replace=False)
    colors = rng.choice(len(COLOR_NAMES), size=k, replace=False)
    quads = rng.choice(len(QUADRANTS), size=k, replace=False)
    objects = tuple(SceneObject(SHAPES[s], COLOR_NAMES[c], int(q)) for s, c, q in zip(shapes, colors, quads))
    grey = int(rng.integers(225, 256))
    background = (grey, grey, grey)
    jitter = tuple(tuple(float(x) for x in rng.random(3)) for _ in range(k))
    return Scene(objects, background, jitter)


def draw_scene(scene: Scene, size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), scene.background)
    draw = ImageDraw.Draw(img)
    half = size / 2
    for obj, (jx, jy, js) in zip(scene.objects, scene.jitter):
        radius = half * (0.22 + 0.12 * js)
        cx = (obj.quadrant % 2) * half + half / 2 + (jx - 0.5) * (half / 2 - radius) * 2 * 0.5
        cy = (obj.quadrant // 2) * half + half / 2 + (jy - 0.5) * (half / 2 - radius) * 2 * 0.5
        fill = COLORS[obj.color]
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - radius), (cx + radius, cy + radius), (cx - radius, cy + radius)], fill=fill)
        else:  # diamond
            draw.polygon([(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)], fill=fill)
    return img


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# Response templates; chosen and rejected draw theirs independently, so wording carries no signal.
_TEMPLATES = {
    "color": ("The {shape} is {value}.", "It is {value}.", "The {shape} in the image is {value}.",
              "That {shape} is coloured {value}."),
    "shape": ("The {color} object is a {value}.", "It is a {value}.", "The {color} shape is a {value}.",
              "That would be a {value}."),
    "count": ("The number of objects is {value}.", "I count {value} in total.", "The total is {value}.",
              "{Value}, if you count every shape."),
    "position": ("The {color} {shape} is in the {value} corner.", "It is in the {value} corner.",
                 "You can find it in the {value} corner.", "The {shape} sits in the {value} part of the image."),
}
_PROMPTS = {
    "color": ("What color is the {shape}?", "Which colour does the {shape} have?", "Tell me the color of the {shape}."),
    "shape": ("What shape is the {color} object?", "Which shape is drawn in {color}?", "Name the shape of the {color} object."),
    "count": ("How many objects are in the picture?", "Count the objects in the image.", "How many shapes can you see?"),
    "position": ("Where is the {color} {shape}?", "In which corner is the {color} {shape}?", "Where in the image is the {color} {shape}?"),
}


@dataclass(frozen=True)
class Question:
    task: str
    prompt: str
    chosen: str
    rejected: str
    answer: str
    wrong: str
    slots: tuple[tuple[str, str], ...] = ()   # the asked object's shape and colour, as the templates name them


def answer_text(task: str, template: int, value: str, slots: dict) -> str:
    """Response template `template` of the task, saying `value` about the object `slots` names."""
    return _TEMPLATES[task][template].format(value=value, Value=value.capitalize(), **slots)


def _answer_values(task: str) -> tuple[str, ...]:
    return {"color": COLOR_NAMES, "shape": SHAPES, "count": COUNT_WORDS, "position": QUADRANTS}[task]


def make_question(scene: Scene, rng: np.random.Generator) -> Question:
    """One question about the scene; the rejected answer is a uniformly drawn wrong value."""
    task = TASKS[int(rng.integers(len(TASKS)))]
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    truth = {"color": obj.color, "shape": obj.shape, "count": COUNT_WORDS[len(scene.objects) - 1],
             "position": QUADRANTS[obj.quadrant]}[task]
    values = _answer_values(task)
    others = [v for v in values if v != truth]
    wrong = others[int(rng.integers(len(others)))]
    slots = {"shape": obj.shape, "color": obj.color}
    prompts = _PROMPTS[task]
    prompt = prompts[int(rng.integers(len(prompts)))].format(**slots)
    templates = _TEMPLATES[task]

    def say(value: str) -> str:
        return answer_text(task, int(rng.integers(len(templates))), value, slots)

    return Question(task, prompt, say(truth), say(wrong), truth, wrong, tuple(slots.items()))
