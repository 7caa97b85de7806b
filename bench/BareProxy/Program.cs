// The least .NET can do, for bench/gateway.sh to tell what Portcullis adds from what the platform costs:
//   dotnet BareProxy.dll <listen-url> <upstream-url>   a reverse proxy: Kestrel in, one pooled SocketsHttpHandler
//                                                      out, headers copied, body streamed, no middleware, no checks;
//   dotnet BareProxy.dll <listen-url> ok               every request answered 200 (an auth_request stub in Kestrel);
//   dotnet BareProxy.dll <listen-url> <upstream-url> yarp   the reverse proxy on YARP's IHttpForwarder (the same
//                                                      client, YARP's default transform): what YARP itself costs.
using System.Net;
using Yarp.ReverseProxy.Forwarder;

var builder = WebApplication.CreateSlimBuilder();
builder.Logging.ClearProviders();
builder.WebHost.UseUrls(args[0]);
builder.WebHost.ConfigureKestrel(k => k.AddServerHeader = false);
builder.Services.AddHttpForwarder();
var app = builder.Build();
if (args[1] == "ok")
{
    app.Run(_ => Task.CompletedTask);
    app.Run();
    return;
}
var upstream = args[1].TrimEnd('/');
var client = new HttpMessageInvoker(new SocketsHttpHandler
{
    UseProxy = false, AllowAutoRedirect = false, UseCookies = false, AutomaticDecompression = DecompressionMethods.None,
    ActivityHeadersPropagator = null,
});
if (args.Length > 2 && args[2] == "yarp")
{
    var forwarder = app.Services.GetRequiredService<IHttpForwarder>();
    var config = new ForwarderRequestConfig { ActivityTimeout = TimeSpan.FromSeconds(100), Version = HttpVersion.Version11, VersionPolicy = HttpVersionPolicy.RequestVersionOrLower };
    app.Run(async http => await forwarder.SendAsync(http, upstream, client, config, HttpTransformer.Default));
    app.Run();
    return;
}
app.Run(async http =>
{
    using var message = new HttpRequestMessage(HttpMethod.Parse(http.Request.Method), upstream + http.Request.Path + http.Request.QueryString);
    foreach (var (name, values) in http.Request.Headers)
    {
        if (name is not ("Host" or "Connection" or "Authorization"))
            message.Headers.TryAddWithoutValidation(name, (IEnumerable<string>)values!);
    }
    using var response = await client.SendAsync(message, http.RequestAborted);
    http.Response.StatusCode = (int)response.StatusCode;
    foreach (var (name, values) in response.Headers.NonValidated)
    {
        if (name is not ("Connection" or "Keep-Alive" or "Transfer-Encoding"))
            http.Response.Headers[name] = values.ToString();
    }
    foreach (var (name, values) in response.Content.Headers.NonValidated)
        http.Response.Headers[name] = values.ToString();
    await using var body = await response.Content.ReadAsStreamAsync(http.RequestAborted);
    await body.CopyToAsync(http.Response.Body, http.RequestAborted);
});
app.Run();
