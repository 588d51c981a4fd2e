"""The five LivePortrait networks, one file each; shared blocks live in `blocks.py`.

Importing this package only imports torch and these small modules (no weights are loaded).
"""
from .appearance_feature_extractor import AppearanceFeatureExtractor
from .motion_extractor import MotionExtractor
from .spade_generator import SPADEGenerator
from .stitching_retargeting import StitchingRetargeting
from .warping_module import WarpingModule

__all__ = ["AppearanceFeatureExtractor", "MotionExtractor", "WarpingModule", "SPADEGenerator",
           "StitchingRetargeting"]
