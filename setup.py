from setuptools import find_packages, setup

setup(
    name="salient-outpaint",
    version="0.1.0",
    description="Salient object-aware background generation: SD2 inpainting + a mask ControlNet, in pure PyTorch",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["salient_outpaint", "salient_outpaint.*"]),
    # torch and torchvision stay unpinned so that pip picks a matching pair (open_clip needs torchvision).
    install_requires=["torch", "torchvision", "numpy", "safetensors", "open-clip-torch", "einops", "tqdm", "pillow"],
    extras_require={
        # The test extra brings the reference packages the evaluation metrics are compared against,
        # the segmenters' packages (their plumbing runs on random weights), the optional training extras,
        # and the app's: its tests start a real server, and drive a real browser where chromium is installed.
        "test": ["pytest", "scipy", "lpips", "pytorch-fid", "segment-anything", "transparent-background",
                 "webdataset", "tensorboard", "gradio>=6,<7", "playwright"],
        "sam": ["segment-anything"],
        "mask": ["transparent-background"],  # InSPyReNet, the authors' salient-object detector
        "shards": ["webdataset"],  # --data shards:PATTERN and `python -m salient_outpaint.data.shards pack`
        "tensorboard": ["tensorboard"],  # train.py --log-to tensorboard
        "app": ["gradio>=6,<7"],  # the web app and HTTP API (app.py); 6 is the API (api_visibility) it is written for
    },
)
