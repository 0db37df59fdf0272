"""`mnist-lit demo --ckpt_path CKPT`: a local web page where you draw a digit (or upload an
image) and see what the model reads: the digit, its ten probabilities, and the 28x28 image the
network received after `predict`'s preprocessing. Built with Gradio (`pip install -e ".[demo]"`),
served on 127.0.0.1 by default, with no calls to the internet: no analytics, no share link, no
web fonts."""

import os
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace

from mnist_lit.errors import ConfigError, UserError
from mnist_lit.images import ImageError
from mnist_lit.inference.export import test_accuracy
from mnist_lit.inference.reader import CHECKPOINT_HELP, DigitReader, Reading
from mnist_lit.mnist import IMAGE_SIDE

PROMPT = "Draw a digit in the box, or upload a picture of one."
SHOWN_SIDE = 280  # the network's 28x28 input, drawn 10x so that its pixels can be seen
MAX_UPLOAD = "20mb"
# the browser draws with the system's fonts, not Google's: the page asks nothing of the internet
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "sans-serif")
SYSTEM_MONO = ("ui-monospace", "monospace")
# Gradio's sketchpad opens, and comes back from its Clear button, with no tool chosen ("select
# the draw tool to start"): the page chooses the brush itself, so that drawing works from the
# first stroke. (The button is found by its English label; in other locales, one click on it.)
CHOOSE_BRUSH = """() => {
  const choose = (tries) => {
    const brush = document.querySelector('#sketchpad button[aria-label="Brush"]');
    if (brush && brush.classList.contains('highlight')) return;
    if (brush) brush.click();
    if (tries > 0) setTimeout(() => choose(tries - 1), 100);
  };
  choose(100);
}"""


class DemoNeedsGradio(UserError, ImportError):
    """Gradio, an optional dependency, is not installed."""


class DemoServerError(UserError, OSError):
    """The page cannot be served at the host and port asked for."""


def describe(reading: Reading) -> tuple[str, dict[str, float], np.ndarray]:
    """The page's three outputs: the reading in words, the probabilities, the network's input."""
    words = f"## Read as {reading.label} ({reading.confidence:.1%})"
    probs = {str(digit): float(p) for digit, p in enumerate(reading.probs)}
    scale = SHOWN_SIDE // IMAGE_SIDE
    shown = np.kron(reading.digit, np.ones((scale, scale), np.uint8))
    return words, probs, shown


def message_only(message: str) -> tuple[str, None, None]:
    return message, None, None


def read_drawing(reader: DigitReader, drawing: dict | None) -> tuple:
    """The sketchpad's picture (RGBA, the strokes on a transparent or white canvas)."""
    canvas = None if drawing is None else drawing.get("composite")
    if canvas is None:
        return message_only(PROMPT)
    try:
        return describe(reader.read(np.asarray(canvas, dtype=np.uint8)))
    except ImageError:  # an empty canvas, or one just cleared
        return message_only(PROMPT)


def read_upload(reader: DigitReader, path: str | None) -> tuple:
    if path is None:
        return message_only(PROMPT)
    try:
        return describe(reader.read(path))
    except ImageError as error:  # blank, huge, not an image, damaged: said on the page
        return message_only(f"**{Path(path).name}** cannot be read: {error}")


def page(reader: DigitReader, title: str):
    import gradio as gr

    with gr.Blocks(analytics_enabled=False, title="mnist-lit demo") as blocks:
        gr.Markdown(f"# Draw a digit\n{title}")
        with gr.Row():
            with gr.Column():
                with gr.Tab("Draw"):
                    sketchpad = gr.Sketchpad(
                        label="Draw here with the mouse, a pen or a finger",
                        canvas_size=(400, 400),
                        # a pen about as thick, for the digit's size, as MNIST's strokes
                        brush=gr.Brush(default_size=16, colors=["#000000"], color_mode="fixed"),
                        layers=False,
                        transforms=(),
                        type="numpy",
                        image_mode="RGBA",
                        elem_id="sketchpad",
                    )
                with gr.Tab("Upload"):
                    # any file: one that is not an image gets a message, not silence
                    upload = gr.File(
                        label="An image file",
                        type="filepath",
                        elem_id="upload",
                    )
            with gr.Column():
                words = gr.Markdown(PROMPT, elem_id="reading")
                probs = gr.Label(num_top_classes=10, label="Probabilities", elem_id="probs")
                seen = gr.Image(
                    label="What the network received (28x28, after preprocessing)",
                    type="numpy",
                    image_mode="L",
                    interactive=False,
                    height=SHOWN_SIDE,
                    elem_id="network_input",
                )
        outputs = [words, probs, seen]
        sketchpad.change(
            lambda drawing: read_drawing(reader, drawing),
            sketchpad,
            outputs,
            trigger_mode="always_last",
            show_progress="hidden",
        )
        upload.change(
            lambda path: read_upload(reader, path), upload, outputs, show_progress="hidden"
        )
        sketchpad.clear(None, js=CHOOSE_BRUSH)
        blocks.load(None, js=CHOOSE_BRUSH)
    return blocks


def offline_gradio():
    """Gradio, told before it is imported that this page sends nothing anywhere."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio as gr
    except ImportError:
        raise DemoNeedsGradio(
            'the demo needs Gradio: pip install -e ".[demo]" (or pip install gradio)'
        ) from None
    return gr


def parser() -> ArgumentParser:
    parser = ArgumentParser(prog="mnist-lit demo", description=__doc__)
    parser.add_argument(
        "--ckpt_path",
        type=str,
        required=True,
        help=CHECKPOINT_HELP,
    )
    parser.add_argument("--host", type=str, default="127.0.0.1", help="0.0.0.0 serves others")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", type=str, default="cpu", help="where the network runs")
    return parser


def usable_device(name: str) -> str:
    """--device as torch names devices, refused in one line when unknown or absent here."""
    try:
        torch.empty(0, device=name)
    except (RuntimeError, AssertionError) as error:  # AssertionError: a build without CUDA
        raise ConfigError(f"--device {name}: {str(error).strip().splitlines()[0]}") from None
    return name


def run(options: Namespace) -> None:
    # Gradio keeps each request's images as files: in a folder of this demo's own, removed on
    # exit (named before Gradio is imported, as parts of it read it then)
    with tempfile.TemporaryDirectory(prefix="mnist-lit-demo-") as files:
        os.environ["GRADIO_TEMP_DIR"] = files
        gr = offline_gradio()
        device = usable_device(options.device)
        reader = DigitReader(options.ckpt_path, device=device)  # a bad one: before serving
        serve(gr, reader, options)


def serve(gr: ModuleType, reader: DigitReader, options: Namespace) -> None:
    accuracy = test_accuracy(reader.checkpoint)
    tested = f", test accuracy {accuracy:.2%}" if accuracy is not None else ""
    blocks = page(reader, f"Model: `{reader.checkpoint}`{tested}")
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO)
    try:
        blocks.launch(
            server_name=options.host,
            server_port=options.port,
            share=False,
            ssr_mode=False,
            mcp_server=False,
            enable_monitoring=False,
            max_file_size=MAX_UPLOAD,
            footer_links=[],
            theme=theme,
            quiet=True,
            prevent_thread_lock=True,
        )
    except OSError as error:  # the port is taken, or the host is not this machine's
        raise DemoServerError(f"cannot serve on {options.host}:{options.port}: {error}") from None
    # flushed: where stdout is a pipe or a file, the address is there while the demo serves
    address = f"http://{options.host}:{options.port}"
    print(f"Demo of {reader.checkpoint}: {address}  (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        blocks.close()
