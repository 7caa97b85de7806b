using System.Diagnostics;
using System.Net.Sockets;
using System.Text;

namespace Portcullis.Tests.Infrastructure;

/// <summary>The real Caddy (Debian package <c>caddy</c>) with a given Caddyfile, in a private directory.</summary>
public sealed class CaddyProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _dir;
    private readonly StringBuilder _output = new();

    private CaddyProcess(Process process, string dir)
    {
        _process = process;
        _dir = dir;
    }

    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    public static async Task<CaddyProcess> StartAsync(string caddyfile, int port)
    {
        var caddy = new[] { "/usr/bin/caddy", "/usr/local/bin/caddy" }.FirstOrDefault(File.Exists);
        if (caddy is null)
            Assert.Fail("caddy is missing. Install the Debian package 'caddy' (test.sh does).");
        var dir = Directory.CreateTempSubdirectory("portcullis-caddy-").FullName;
        var file = Path.Combine(dir, "Caddyfile");
        await File.WriteAllTextAsync(file, caddyfile);
        var psi = new ProcessStartInfo(caddy!) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir };
        foreach (var a in new[] { "run", "--config", file, "--adapter", "caddyfile" })
            psi.ArgumentList.Add(a);
        psi.Environment["HOME"] = dir;
        psi.Environment["XDG_DATA_HOME"] = Path.Combine(dir, "data");
        psi.Environment["XDG_CONFIG_HOME"] = Path.Combine(dir, "config");
        var process = Process.Start(psi)!;
        var result = new CaddyProcess(process, dir);
        process.OutputDataReceived += (_, e) => { lock (result._output) result._output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (result._output) result._output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (DateTime.UtcNow < deadline)
        {
            if (process.HasExited)
                Assert.Fail($"caddy exited with {process.ExitCode}: {result.Output}\nCaddyfile:\n{caddyfile}");
            try
            {
                using var tcp = new TcpClient();
                await tcp.ConnectAsync("127.0.0.1", port);
                return result;
            }
            catch (SocketException)
            {
                await Task.Delay(20);
            }
        }
        Assert.Fail($"caddy did not listen on {port}: {result.Output}");
        return result;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
