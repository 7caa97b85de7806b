using System.Diagnostics;
using System.Text;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// A real proxy (nginx, Caddy) started by a test in a private directory: its output kept, ready when its
/// loopback port accepts, killed and its directory removed on dispose.
/// </summary>
public abstract class ProxyProcess : IAsyncDisposable
{
    private Process _process = null!;
    private readonly StringBuilder _output = new();

    protected ProxyProcess(string directory) => Directory = directory;

    public string Directory { get; }

    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    /// <summary>Finds the program among <paramref name="candidates"/>, or fails naming the Debian package to install.</summary>
    protected static string Find(string package, params string[] candidates) =>
        candidates.FirstOrDefault(File.Exists) ?? throw new Xunit.Sdk.XunitException($"{package} is missing. Install the Debian package '{package}' (test.sh does).");

    protected async Task StartAsync(string program, IEnumerable<string> args, int port, string configuration, IDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Directory };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
            psi.Environment[k] = v;
        _process = Process.Start(psi)!;
        _process.OutputDataReceived += (_, e) => { lock (_output) _output.AppendLine(e.Data); };
        _process.ErrorDataReceived += (_, e) => { lock (_output) _output.AppendLine(e.Data); };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();

        switch (await PortWait.ForListenerAsync(_process, port, TimeSpan.FromSeconds(15), TimeSpan.FromMilliseconds(20)))
        {
            case PortWait.Outcome.Exited:
                Assert.Fail($"{Path.GetFileName(program)} exited with {_process.ExitCode}: {Output}{Diagnostics()}\nconfiguration:\n{configuration}");
                break;
            case PortWait.Outcome.TimedOut:
                Assert.Fail($"{Path.GetFileName(program)} did not listen on {port}: {Output}{Diagnostics()}");
                break;
        }
    }

    /// <summary>More to show when it fails, e.g. nginx's error log.</summary>
    protected virtual string Diagnostics() => "";

    public async ValueTask DisposeAsync()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process?.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
        GC.SuppressFinalize(this);
    }
}
