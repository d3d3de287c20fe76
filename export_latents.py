"""Export a finished latent cache as a Hugging Face `datasets` folder (save_to_disk), ready to share.

    python export_latents.py cache_dir=runs/default/latents output_dir=runs/default/latents_hf
    python export_latents.py cache_dir=... output_dir=... push_to_hub=<user>/<name>   # after `huggingface-cli login`
    python train_dit.py cache_dir=runs/default/latents_hf     # or cache_dir=<user>/<name>: the same cache checks
"""

from pipelines.training.latent_hub import main

if __name__ == "__main__":
    main()
