using Microsoft.Playwright;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// Debian's Chromium driven by Playwright, headless, never a downloaded browser. Screenshots go to
/// <c>screenshots/</c> in the test output directory for review.
/// </summary>
public sealed class BrowserFixture : IAsyncLifetime
{
    public const string Chromium = "/usr/bin/chromium";

    private IPlaywright? _playwright;

    public IBrowser Browser { get; private set; } = null!;

    public static string Screenshots { get; } = Path.Combine(AppContext.BaseDirectory, "screenshots");

    public async Task InitializeAsync()
    {
        if (!File.Exists(Chromium))
            Assert.Fail($"{Chromium} is missing. Install the Debian package 'chromium' (test.sh does).");
        Directory.CreateDirectory(Screenshots);
        // Playwright's assertions poll for 5 s by default; a busy CI machine needs what its other waits get, 30 s.
        Assertions.SetDefaultExpectTimeout(30_000);
        _playwright = await Playwright.CreateAsync();
        Browser = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = Chromium,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
        });
    }

    public async Task DisposeAsync()
    {
        if (Browser is not null)
            await Browser.DisposeAsync();
        _playwright?.Dispose();
    }
}
