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
        # and the segmenters' packages, whose plumbing the tests run on random weights.
        "test": ["pytest", "scipy", "lpips", "pytorch-fid", "segment-anything", "transparent-background"],
        "sam": ["segment-anything"],
        "mask": ["transparent-background"],  # InSPyReNet, the authors' salient-object detector
    },
)
