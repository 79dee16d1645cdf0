"""Your own training loop: a map-style Dataset of (audio, video, label) tuples, a DataLoader, a
late-fusion model. own_loop_plain.py trains it as is; own_loop_balanced.py is the same loop with
a balancing method (the README's "Balance your own loop" shows the diff)."""

import mmsample
import torch
from torch import nn
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, Dataset

CLASSES = 4


class AudioVisual(Dataset):
    """Synthetic clips: the audio track says the class clearly, the video only faintly."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, CLASSES, (n,), generator=g)
        signal = nn.functional.one_hot(self.labels, CLASSES).float()
        self.audio = 2.0 * signal.repeat(1, 4) + torch.randn(n, 4 * CLASSES, generator=g)
        self.video = 0.5 * signal.repeat(1, 8) + torch.randn(n, 8 * CLASSES, generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.audio[i], self.video[i], int(self.labels[i])


class LateFusion(nn.Module):
    """One encoder per modality, features concatenated, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = nn.Sequential(nn.Linear(4 * CLASSES, 32), nn.BatchNorm1d(32), nn.ReLU())
        self.video = nn.Sequential(nn.Linear(8 * CLASSES, 32), nn.BatchNorm1d(32), nn.ReLU())
        self.head = nn.Linear(64, CLASSES)

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.audio(audio), self.video(video)], 1))


def main(epochs: int = 5, n: int = 256, batch_size: int = 16) -> nn.Module:
    torch.manual_seed(0)
    loader = DataLoader(AudioVisual(n), batch_size=batch_size, shuffle=True)
    model = LateFusion()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    balancer = mmsample.Balancer(mmsample.methods.SMV(level="sample", warmup=1), epochs=epochs)
    loader = balancer.setup(loader, model, optimizer)
    for epoch in range(epochs):
        for batch in loader:
            loss = balancer.loss(batch, cross_entropy)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}")
    return model


if __name__ == "__main__":
    main()
