using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Portcullis.Hosting;

namespace Portcullis.Tests.Infrastructure;

/// <summary>An advanceable clock (FakeTimeProvider would also hold back the timers the server runs on it, such as the usage flush, which these tests need running).</summary>
public sealed class ManualTimeProvider(DateTimeOffset start) : TimeProvider
{
    private long _ticks = start.UtcTicks;

    public override DateTimeOffset GetUtcNow() => new(Interlocked.Read(ref _ticks), TimeSpan.Zero);

    public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);

    public void Set(DateTimeOffset to) => Interlocked.Exchange(ref _ticks, to.UtcTicks);
}

/// <summary>
/// The real server, HTTP on a loopback port, but in this process so that tests can move its clock.
/// Used only where time must be controlled; everything else runs against the real process.
/// </summary>
public class InProcessServer : IAsyncLifetime
{
    private readonly string[] _extraArgs;
    private WebApplication? _app;

    public InProcessServer() : this([]) { }

    /// <summary>For fixtures that need settings: <paramref name="extraArgs"/> are added to the command line.</summary>
    protected InProcessServer(string[] extraArgs) => _extraArgs = extraArgs;

    public ManualTimeProvider Clock { get; } = new(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
    public string DataDir { get; } = Directory.CreateTempSubdirectory("portcullis-inproc-").FullName;
    public Uri BaseAddress { get; private set; } = null!;

    /// <summary>The server's services, for tests of classes that no endpoint reaches yet.</summary>
    public IServiceProvider Services => _app!.Services;

    public async Task InitializeAsync()
    {
        Environment.SetEnvironmentVariable("PORTCULLIS_ADMIN_PASSWORD", PortcullisServer.AdminPassword);
        BaseAddress = new Uri($"http://127.0.0.1:{PortcullisServer.FreePort()}");
        _app = ServerApp.Build(["--urls", BaseAddress.ToString().TrimEnd('/'), "--data-dir", DataDir, .. _extraArgs],
            services => services.AddSingleton<TimeProvider>(Clock));
        await Startup.StartAsync(_app);
    }

    public HttpClient Client(string? token = null)
    {
        var client = new HttpClient { BaseAddress = BaseAddress };
        if (token is not null)
            client.DefaultRequestHeaders.Authorization = HttpExtensions.Bearer(token);
        return client;
    }

    public async Task DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        try
        {
            Directory.Delete(DataDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
