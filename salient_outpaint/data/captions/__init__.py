"""Captions for a salient-object folder from its images, with an open_clip CoCa model (the paper captioned
its data with BLIP-2; we use the captioner open_clip ships). decoding.py chooses the tokens (greedy or group
beam search, as open_clip's generate), coca.py runs the model, folder.py writes and checks the captions
file, command.py is the command line:

    python -m salient_outpaint.data.captions ROOT --out captions.jsonl --weights open_clip_model.safetensors
    python -m salient_outpaint.data.captions --check captions.jsonl ROOT
"""
