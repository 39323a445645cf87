"""Model cards written from a checkpoint's saved recipe and the evaluator's results (`gmaivl model card`)."""

if __name__ != "gmaivl.model_cards":  # imported by its folder name from a checkout: see gmaivl/_checkout.py
    import pathlib
    import runpy

    runpy.run_path(str(pathlib.Path(__file__).parents[1] / "gmaivl" / "_checkout.py"))["hand_over"](__name__)
