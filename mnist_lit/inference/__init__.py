"""Using a trained model: reading digits from Python (reader.py), `mnist-lit export` to ONNX or
torch.export (export.py), and `mnist-lit demo`, a page to draw digits on (demo.py)."""
