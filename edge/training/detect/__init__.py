"""lpr-edge's own plate detector, trained from the repo (`lpr-edge-train detect --spec FILE`): a small
stride-16 CNN with NVIDIA LPDNet's DetectNet_v2 contract (edge/detect/contracts.py), trained on the real
scenes in ../shared/data/detect plus synthetic plates composited onto them."""
