"""read_clip: window sampling, A/V alignment, padding, missing audio, errors."""

import numpy as np
import pytest

from conftest import flash_and_click, write_av
from vatt.data.media import MediaError, probe_duration, read_clip


def test_shapes_dtypes_and_resize(tmp_path):
    path = flash_and_click(tmp_path / "a.mp4")
    clip = read_clip(path, 0.5, num_frames=8, fps=10, sample_rate=16000, num_samples=12800, short_side=32)
    assert clip.video.dtype == np.uint8 and clip.video.shape == (8, 32, 43, 3)  # 48x64 -> short side 32
    assert clip.audio.dtype == np.float32 and clip.audio.shape == (12800,)
    assert clip.has_audio and not clip.padded


def test_yuv420p_output_hands_over_the_decoded_planes_of_the_rgb_frames(tmp_path):
    path = flash_and_click(tmp_path / "a.mp4", flash_time=1.2)  # 64x48
    rgb = read_clip(path, 0.9, num_frames=8, fps=10, sample_rate=16000, num_samples=12800)
    yuv = read_clip(path, 0.9, num_frames=8, fps=10, sample_rate=16000, num_samples=12800, output="yuv420p")
    assert yuv.video.shape == (8, 48, 64) and yuv.chroma.shape == (8, 2, 24, 32) and yuv.video.dtype == np.uint8
    assert not yuv.bt709 and np.array_equal(yuv.audio, rgb.audio)
    # the flash: limited-range luma 235 where RGB is white, 16 where black, same frames
    assert ((yuv.video.reshape(8, -1).mean(1) > 200) == (rgb.video.reshape(8, -1).mean(1) > 200)).all()
    luma = rgb.video.astype(np.float64) @ [0.299, 0.587, 0.114]  # BT.601, full range
    assert np.abs(16 + 219 / 255 * luma - yuv.video).mean() < 2.0
    capped = read_clip(path, 0.9, num_frames=8, fps=10, sample_rate=16000, num_samples=0, short_side=32, output="yuv420p")
    assert capped.video.shape == (8, 32, 44) and capped.chroma.shape == (8, 2, 16, 22)  # shrunk (43 -> even 44)
    kept = read_clip(path, 0.9, num_frames=8, fps=10, sample_rate=16000, num_samples=0, short_side=96, output="yuv420p")
    assert kept.video.shape == (8, 48, 64)  # a cap, never an enlargement
    with pytest.raises(ValueError, match="stretch"):
        read_clip(path, 0.9, 8, 10, 16000, 0, 32, stretch=(1.1, 0.9), output="yuv420p")
    with pytest.raises(ValueError, match="output"):
        read_clip(path, 0.9, 8, 10, 16000, 0, output="rgba")


@pytest.mark.parametrize("start", [0.9, 1.0, 1.05])
def test_flash_and_click_line_up_within_one_frame(tmp_path, start):
    path = flash_and_click(tmp_path / "a.mp4", flash_time=1.2)
    fps, sr = 10, 16000
    clip = read_clip(path, start, num_frames=8, fps=fps, sample_rate=sr, num_samples=int(0.8 * sr))
    white = clip.video.reshape(8, -1).mean(axis=1) > 200
    # target time start + i/fps shows the white frames exactly when it falls in [1.2, 1.3)
    expected = [1.2 - 1e-6 <= start + i / fps < 1.3 - 1e-6 for i in range(8)]
    assert white.tolist() == expected
    click_time = start + np.abs(clip.audio).argmax() / sr
    assert click_time == pytest.approx(1.2, abs=1 / fps)


def test_window_past_the_end_is_padded(tmp_path):
    # 2 s at 25 fps: frame i is grey level 40 + 4 i (never black), with a tone to the end
    frames = np.stack([np.full((48, 64, 3), 40 + 4 * i, np.uint8) for i in range(50)])
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(32_000) / 16_000)).astype(np.float32)
    path = write_av(tmp_path / "a.mp4", frames, 25, tone, 16_000)
    clip = read_clip(path, 1.6, num_frames=8, fps=10, sample_rate=16000, num_samples=12800)
    assert clip.padded
    levels = clip.video.reshape(8, -1).mean(axis=1)
    # targets 1.6, 1.7, 1.8, 1.9 s are frames 40, 42, 45, 47; past the end (2.0 s on) the last frame, 49, repeats
    expected = [40 + 4 * i for i in (40, 42, 45, 47, 49, 49, 49, 49)]
    assert np.abs(levels - expected).max() < 2.5
    assert np.array_equal(clip.video[-1], clip.video[4]) and levels[-1] > 200
    assert np.abs(clip.audio[1000:6000]).max() > 0.4  # the tone up to the end
    assert np.abs(clip.audio[-5800:]).max() == 0.0  # zero-filled past the end (2.0 s = sample 6400)


def test_file_without_audio_gives_zeros(tmp_path):
    frames = np.full((20, 32, 32, 3), 128, np.uint8)
    path = write_av(tmp_path / "silent.mp4", frames, fps=10)
    clip = read_clip(path, 0.0, num_frames=4, fps=10, sample_rate=16000, num_samples=6400)
    assert not clip.has_audio and clip.audio.shape == (6400,) and not clip.audio.any()


def test_bytes_decode_like_the_file(tmp_path):
    path = flash_and_click(tmp_path / "a.mp4")
    a = read_clip(path, 1.0, 4, 10, 16000, 6400)
    b = read_clip(path.read_bytes(), 1.0, 4, 10, 16000, 6400)
    assert np.array_equal(a.video, b.video) and np.allclose(a.audio, b.audio)
    assert probe_duration(path) == pytest.approx(3.0, abs=0.1)


def test_garbage_and_truncated_files_raise_media_error_naming_the_file(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError, match="junk.mp4"):
        read_clip(junk, 0.0, 4, 10, 16000, 6400)
    good = flash_and_click(tmp_path / "good.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good[: len(good) // 3])
    with pytest.raises(MediaError, match="cut.mp4"):
        read_clip(cut, 0.0, 4, 10, 16000, 6400)
    assert issubclass(MediaError, ValueError)


def test_stretch_scales_height_and_width_independently_before_the_short_side_resize(tmp_path):
    path = flash_and_click(tmp_path / "a.mp4")  # 48 high, 64 wide
    clip = read_clip(path, 0.5, num_frames=2, fps=10, sample_rate=16000, num_samples=1600, short_side=64,
                     stretch=(1.2, 0.8))
    # 48 * 1.2 = 57.6 high, 64 * 0.8 = 51.2 wide; the short side (width) to 64: x1.25 -> 72 x 64
    assert clip.video.shape == (2, 72, 64, 3)
