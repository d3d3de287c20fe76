"""Which video VAEs the project bundles, their named sizes, and building or loading any of them by name.

    vae = build_autoencoder("lean-4ch")                 # a preset of any bundled model, random weights
    vae = build_autoencoder("lean-small", latent_channels=8)
    vae = load_autoencoder("runs/default/vae/vae")      # any saved bundled VAE, by the _class_name in config.json
    vae = load_autoencoder("stabilityai/sd-vae-ft-ema") # a diffusers AutoencoderKL folder: a per-frame video VAE
    vae = load_autoencoder("/models/Wan2.1-T2V-1.3B-Diffusers")  # a diffusers video VAE (Wan, CogVideoX, Hunyuan,
                                                                 # LTX), or the pipeline folder holding it in vae/

Adding a VAE: a package under `vae/` whose model subclasses `VideoAutoencoder`, its class in `BUNDLED_MODELS`
and its presets in `VAE_PRESETS`.
"""

from __future__ import annotations

import difflib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

from diffusers import AutoencoderKL

from .autoencoder import VideoAutoencoder
from .diffusers_video import VIDEO_VAES, DiffusersVideoVAE
from .ivvae import IVVAE, IVVAE_IMAGE_PRESETS, IVVAE_PRESETS, IVImageVAE
from .leanvae import LEANVAE_PRESETS, LeanVAE
from .per_frame import PerFrameVAE
from .wfvae import WFVAE, WFVAE_PRESETS
from .wfvae.official import OFFICIAL_CLASS as OFFICIAL_WFVAE

BUNDLED_MODELS: dict[str, type[VideoAutoencoder]] = {cls.__name__: cls for cls in (LeanVAE, WFVAE, IVVAE, IVImageVAE,
                                                                                   PerFrameVAE, DiffusersVideoVAE)}
IMAGE_VAES = {"AutoencoderKL": AutoencoderKL}


@dataclass(frozen=True)
class VAEPreset:
    """A named size of a bundled model: its class and constructor arguments."""

    model: type[VideoAutoencoder]
    kwargs: dict = field(default_factory=dict)

    def build(self, **overrides) -> VideoAutoencoder:
        return self.model(**{**self.kwargs, **overrides})


VAE_PRESETS: dict[str, VAEPreset] = {
    **{name: VAEPreset(LeanVAE, kwargs) for name, kwargs in LEANVAE_PRESETS.items()},
    **{name: VAEPreset(WFVAE, kwargs) for name, kwargs in WFVAE_PRESETS.items()},
    **{name: VAEPreset(IVVAE, kwargs) for name, kwargs in IVVAE_PRESETS.items()},
    **{name: VAEPreset(IVImageVAE, kwargs) for name, kwargs in IVVAE_IMAGE_PRESETS.items()},
}


def _closest(name: str, choices, what: str) -> ValueError:
    close = difflib.get_close_matches(name, list(choices), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ValueError(f"unknown {what} '{name}'.{hint} Choose from: {', '.join(choices)}")


def get_preset(name: str) -> VAEPreset:
    if name not in VAE_PRESETS:
        raise _closest(name, VAE_PRESETS, "VAE preset")
    return VAE_PRESETS[name]


def check_arguments(preset: str, arguments: dict) -> None:
    """Raise a ValueError naming the closest valid argument for any key the preset's model does not take."""
    model = get_preset(preset).model
    valid = [p for p in inspect.signature(model.__init__).parameters if p != "self"]
    for key in arguments:
        if key not in valid:
            raise _closest(key, valid, f"argument of {model.__name__}")


def build_autoencoder(preset: str, **overrides) -> VideoAutoencoder:
    """A new (randomly initialised) model of the named preset; `overrides` replace preset arguments."""
    check_arguments(preset, overrides)
    return get_preset(preset).build(**overrides)


def vae_folder(path: str | Path) -> Path:
    """The folder holding a VAE's config.json: `path` itself, the folder of a checkpoint file beside its config
    (the released WF-VAE .ckpt), or a pipeline folder's `vae/`."""
    path = Path(path)
    path = path.parent if path.is_file() else path
    for candidate in (path, path / "vae"):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(f"no VAE at {path}: expected a folder with config.json (written by save_pretrained)")


def load_autoencoder(path: str | Path) -> VideoAutoencoder:
    """Load a saved VAE folder: a bundled model by its `_class_name`, the released WF-VAE (a `WFVAEModel` folder
    or a `.ckpt` beside its config), a released LeanVAE `.ckpt` (no config beside it), a released IV-VAE `.pth`, an
    image `AutoencoderKL` wrapped as a per-frame video VAE (temporal ratio 1, latent normalisation from its scaling
    and shift factors), or a diffusers video VAE (`vae/diffusers_video.py`) wrapped as it is."""
    if Path(path).suffix == ".pth":
        return IVVAE.from_official_checkpoint(path)
    if Path(path).suffix == ".ckpt" and not (Path(path).parent / "config.json").is_file():
        return LeanVAE.from_official_checkpoint(path)  # a WF-VAE .ckpt sits beside its config.json
    config_path = vae_folder(path) / "config.json"
    name = json.loads(config_path.read_text()).get("_class_name")
    if name in BUNDLED_MODELS:
        return BUNDLED_MODELS[name].from_pretrained(config_path.parent)
    if name == OFFICIAL_WFVAE:
        return WFVAE.from_official_checkpoint(path)
    if name in IMAGE_VAES:
        return PerFrameVAE.from_image_vae(IMAGE_VAES[name].from_pretrained(config_path.parent))
    if name in VIDEO_VAES:
        return DiffusersVideoVAE.from_diffusers(VIDEO_VAES[name].from_pretrained(config_path.parent))
    raise ValueError(f"{config_path} describes a {name!r}; the loadable VAEs are "
                     f"{', '.join([*BUNDLED_MODELS, OFFICIAL_WFVAE, *IMAGE_VAES, *VIDEO_VAES])}")
