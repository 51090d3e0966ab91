"""The Gradio demo's parts behind app.py (the Space's entry point, which lays the page out):
env (the process's temporary folder, set up before gradio is imported: importing this package does
it), inputs (checks of what a request sends), sessions (each visitor's results and files), models
(the checkpoint's models, loaded once), gpu (the model calls, ZeroGPU-ready), views (the 3D viewer's
files) and handlers (what each event does)."""

from vat.app.env import PROCESS_TEMP

__all__ = ["PROCESS_TEMP"]
